"""Email benchmark: parsing over the conformance corpus, and SMTP intake, each beside a reference.

(a) Parsing: ``parse_email`` over every raw mail of the corpus (``role == email`` in
    MANIFEST.tsv, read in place from $HELPLINE_CORPUS or <repo>/../shared/corpus), in this one
    process; beside it the stdlib alone on the same bytes (``policy=email.policy.default``,
    walking the parts and calling ``get_content()`` on the text parts).
(b) SMTP intake: ``helpline serve`` in a subprocess (SQLite, ``durable = true``, no relay), then
    ``--clients`` threads, each with one smtplib connection, sending distinct mails; beside it
    the same load against ``bench/smtp_reference.py`` (bare aiosmtpd + one durable INSERT per
    mail).

    python -m bench.email                  # both parts, about a minute
    python -m bench.email --check          # exit 1 when a target is missed
    python -m bench.email --only smtp --mails 4000 --profile   # then: py-spy record --pid N

Run it as a module (``-m``): the file name would shadow the stdlib ``email`` package if the
``bench`` directory itself were on sys.path.

Targets (the issue's): SMTP intake >= 300 mails/s from 8 concurrent clients on SQLite; parsing
>= 500 mails/s on one core over the corpus. Parsing throughput is counted in CPU seconds of this
process (what one core does, unaffected by other load on the machine); wall-clock is shown too.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import random
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from bench.intake import ROOT, Server, free_port, helpline_command, start, stop, workdir

MIN_PARSE_RATE = 500.0  # mails/s, one core
MIN_SMTP_RATE = 300.0  # mails/s, 8 clients
SUPPORT = "support@example.com"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- (a) parsing -----------------------------------------------------------------------------


def corpus_root() -> Path | None:
    """Like tests/adapters/test_email_corpus.py: $HELPLINE_CORPUS, else ../shared/corpus."""
    for candidate in (os.environ.get("HELPLINE_CORPUS"), ROOT.parent / "shared" / "corpus"):
        if candidate and Path(candidate).is_dir():
            path = Path(candidate)
            path = path / "email" if (path / "email").is_dir() else path
            if (path / "MANIFEST.tsv").is_file():
                return path
    return None


def corpus_mails(root: Path) -> list[tuple[str, bytes]]:
    with (root / "MANIFEST.tsv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [
        (row["path"], (root / row["path"]).read_bytes()) for row in rows if row["role"] == "email"
    ]


def stdlib_reference(raw: bytes) -> None:
    """The stdlib alone: modern-policy parse, every text part decoded."""
    msg = message_from_bytes(raw, policy=email_policy.default)
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            # broken parts are part of the corpus: the reference just goes on
            with contextlib.suppress(Exception):
                part.get_content()


@dataclass
class ParseResult:
    name: str
    mails: int
    cpu: float  # CPU seconds of the best round
    wall: float
    latencies: list[tuple[float, str]]  # (seconds, path) of the best round
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def rate_cpu(self) -> float:
        return self.mails / self.cpu if self.cpu else 0.0

    @property
    def rate_wall(self) -> float:
        return self.mails / self.wall if self.wall else 0.0

    def ms(self, q: float) -> float:
        return percentile([t for t, _ in self.latencies], q) * 1000


def measure_parse(
    name: str, fn: Callable[[bytes], object], mails: list[tuple[str, bytes]], rounds: int
) -> ParseResult:
    for _, raw in mails[:: max(1, len(mails) // 50)]:  # warm caches and lazy imports
        with contextlib.suppress(Exception):
            fn(raw)
    best: ParseResult | None = None
    for _ in range(rounds):
        latencies: list[tuple[float, str]] = []
        errors: dict[str, int] = {}
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for path, raw in mails:
            began = time.perf_counter()
            try:
                fn(raw)
            except Exception as err:  # counted, the run goes on
                errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1
            latencies.append((time.perf_counter() - began, path))
        result = ParseResult(
            name,
            len(mails),
            time.process_time() - cpu0,
            time.perf_counter() - wall0,
            latencies,
            errors,
        )
        if best is None or result.cpu < best.cpu:
            best = result
    assert best is not None
    return best


def run_parse(args: argparse.Namespace) -> tuple[list[ParseResult], str]:
    from adapters.email_parse import parse_email

    root = corpus_root()
    if root is None:
        return [], "corpus not found (set HELPLINE_CORPUS): parsing row skipped"
    mails = corpus_mails(root)
    print(f"parsing {len(mails)} corpus mails, {args.rounds} round(s) each ...", flush=True)
    results = [
        measure_parse("helpline", parse_email, mails, args.rounds),
        measure_parse("stdlib", stdlib_reference, mails, args.rounds),
    ]
    return results, f"{len(mails)} raw mails from {root}"


# -- (b) SMTP intake -------------------------------------------------------------------------

WORDS = (
    "order", "invoice", "refund", "printer", "login", "password", "account", "shipping",
    "delivery", "damaged", "broken", "missing", "late", "charge", "twice", "subscription",
    "cancel", "upgrade", "error", "screen", "crash", "update", "tracking", "warranty",
    "replacement", "battery", "cable", "keyboard", "payment", "card", "declined",
)  # fmt: skip
NAMES = (
    "Ann Lee", "Bob Stone", "Chen Wei", "Dana Ruiz", "Emil Novak", "Fatima Khan", "Göran Sjö",
    "Hana Sato",
)  # fmt: skip


def bench_mail(tag: str, i: int, rng: random.Random) -> bytes:
    """A distinct, realistic customer mail: plain, multipart/alternative or with an attachment."""
    name = rng.choice(NAMES)
    sender = f"customer-{tag}-{i}@example.org"
    words = [rng.choice(WORDS) for _ in range(rng.randint(40, 160))]
    body = "Hello,\n\n" + " ".join(words) + f".\n\nOrder #{100000 + i}.\n\nThanks,\n{name}\n"
    msg = EmailMessage()
    msg["From"] = f"{name} <{sender}>"
    msg["To"] = f"Support <{SUPPORT}>"
    msg["Subject"] = f"{words[0].capitalize()} {words[1]} problem #{i}"
    msg["Date"] = format_datetime(datetime.now().astimezone())
    msg["Message-ID"] = make_msgid(f"{tag}.{i}", domain="example.org")
    if i % 7 == 3:  # a reply quoting earlier mail
        msg["In-Reply-To"] = f"<earlier-{tag}-{i}@example.org>"
        body += f"\nOn Mon, 1 Jan 2024 at 10:00, Support <{SUPPORT}> wrote:\n> How can we help?\n"
    msg.set_content(body)
    kind = i % 3
    if kind >= 1:  # multipart/alternative with an HTML rendering
        paragraphs = "".join(f"<p>{line}</p>" for line in body.split("\n\n"))
        msg.add_alternative(
            f"<html><head><style>p{{margin:0}}</style></head><body>{paragraphs}</body></html>",
            subtype="html",
        )
    if kind == 2 and i % 2 == 0:  # and a small attachment
        msg.add_attachment(
            rng.randbytes(2048), maintype="image", subtype="png", filename=f"photo-{i}.png"
        )
    return msg.as_bytes(policy=email_policy.SMTP)


@dataclass
class SmtpSample:
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, key: str) -> None:
        self.errors[key] = self.errors.get(key, 0) + 1


def client(
    port: int, mails: list[tuple[str, bytes]], sample: SmtpSample, gate: threading.Barrier
) -> None:
    """One connection, one SMTP transaction (MAIL, RCPT, DATA) per mail."""
    smtp: smtplib.SMTP | None = None
    gate.wait()
    for sender, raw in mails:
        began = time.perf_counter()
        try:
            if smtp is None:
                smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
                smtp.ehlo("bench.test")
            code, reply = smtp.mail(sender)
            if code == 250:
                code, reply = smtp.rcpt(SUPPORT)
            if code == 250:
                code, reply = smtp.data(raw)
            if code == 250:
                sample.latencies.append(time.perf_counter() - began)
            else:
                sample.error(f"{code} {reply.decode('utf-8', 'replace')[:60]}")
                smtp.rset()
        except (smtplib.SMTPException, OSError) as err:
            sample.error(type(err).__name__)
            with contextlib.suppress(Exception):
                if smtp is not None:
                    smtp.close()
            smtp = None
    if smtp is not None:
        with contextlib.suppress(Exception):
            smtp.quit()


def drive(
    port: int, mails: list[tuple[str, bytes]], clients: int
) -> tuple[SmtpSample, float, float]:
    """All mails over ``clients`` connections; returns the sample, wall seconds, client CPU s."""
    sample = SmtpSample()
    gate = threading.Barrier(clients + 1)
    threads = [
        threading.Thread(target=client, args=(port, mails[c::clients], sample, gate), daemon=True)
        for c in range(clients)
    ]
    for thread in threads:
        thread.start()
    gate.wait()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.join()
    return sample, time.perf_counter() - wall0, time.process_time() - cpu0


@dataclass
class SmtpResult:
    name: str
    mails: int
    seconds: float
    sample: SmtpSample
    server_cpu: float  # share of one core
    client_cpu: float

    @property
    def throughput(self) -> float:
        return len(self.sample.latencies) / self.seconds if self.seconds else 0.0

    def ms(self, q: float) -> float:
        return percentile(self.sample.latencies, q) * 1000


def helpline_smtp_config(work: Path, http_port: int, smtp_port: int) -> Path:
    data = work / "helpline-data"
    config = work / "helpline.toml"
    config.write_text(
        f"""
[service]
name = "Bench Support"
public_url = "http://127.0.0.1:{http_port}"
data_dir = "{data}"
log_level = "warning"

[database]
url = "sqlite:///{data}/helpline.db"
durable = true

[intake]
rate_limit_per_minute = 100000000

[email]
addresses = ["{SUPPORT}"]

[email.smtp_server]
host = "127.0.0.1"
port = {smtp_port}
""".lstrip()
    )
    return config


def wait_listening(port: int, server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited:\n{server.log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{server.name}: nothing listening on {port} after {timeout:.0f}s")


def start_smtp_reference(work: Path, port: int) -> Server:
    log = work / "reference.log"
    command = [
        sys.executable, "-m", "bench.smtp_reference",
        "--db", str(work / "reference.db"), "--port", str(port),
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server("reference", proc, f"smtp://127.0.0.1:{port}", log)
    wait_listening(port, server)
    return server


def run_smtp_one(name: str, args: argparse.Namespace, work: Path) -> SmtpResult:
    smtp_port = free_port()
    if name == "helpline":
        http_port = free_port()
        config = helpline_smtp_config(work, http_port, smtp_port)
        server = start(name, helpline_command(config, http_port), http_port, work)
        wait_listening(smtp_port, server)
    else:
        server = start_smtp_reference(work, smtp_port)
    try:
        if args.profile and name == "helpline":
            print(f"helpline pid {server.proc.pid} (attach a profiler now)", flush=True)
            time.sleep(2)
        tag = f"{name}-{os.getpid()}-{int(time.time())}"
        rng = random.Random(7)
        total = args.warmup + args.mails
        mails = [(f"customer-{tag}-{i}@example.org", bench_mail(tag, i, rng)) for i in range(total)]
        if args.warmup:
            drive(smtp_port, mails[: args.warmup], args.clients)
        cpu0 = server.cpu_seconds()
        sample, seconds, client_cpu = drive(smtp_port, mails[args.warmup :], args.clients)
        return SmtpResult(
            name,
            args.mails,
            seconds,
            sample,
            (server.cpu_seconds() - cpu0) / seconds,
            client_cpu / seconds,
        )
    finally:
        stop(server)


def parse_cost_of_bench_mails(n: int = 300) -> float:
    """Microseconds of CPU parse_email needs per SMTP bench mail (in this process)."""
    from adapters.email_parse import parse_email

    rng = random.Random(7)
    mails = [bench_mail("cost", i, rng) for i in range(n)]
    for raw in mails[:30]:
        parse_email(raw)
    cpu0 = time.process_time()
    for raw in mails:
        parse_email(raw)
    return (time.process_time() - cpu0) / n * 1e6


# -- report ----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(
    parsed: list[ParseResult], note: str, smtp: dict[str, SmtpResult], args: argparse.Namespace
) -> bool:
    checks: list[tuple[str, bool, str]] = []
    print()
    print(f"Email benchmark, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    if parsed:
        print(f"\n(a) parsing, one process, best of {args.rounds} round(s): {note}")
        head = (
            f"{'name':<10} | {'mails':>6} | {'errors':>6} | {'mails/s CPU':>11} | "
            f"{'mails/s wall':>12} | {'p50 ms':>7} | {'p99 ms':>7} | {'max ms':>7}"
        )
        print(head)
        print("-" * len(head))
        for r in parsed:
            print(
                f"{r.name:<10} | {r.mails:>6} | {sum(r.errors.values()):>6} | "
                f"{r.rate_cpu:>11.0f} | {r.rate_wall:>12.0f} | {r.ms(0.5):>7.2f} | "
                f"{r.ms(0.99):>7.2f} | {r.ms(1.0):>7.1f}"
            )
        helpline, stdlib = parsed
        for r in parsed:
            for key, n in sorted(r.errors.items()):
                print(f"  {r.name} error: {key} x{n}")
        ratio = helpline.rate_cpu / stdlib.rate_cpu if stdlib.rate_cpu else float("nan")
        print(f"helpline / stdlib (policy.default + get_content) throughput: {ratio:.2f}")
        print("slowest helpline files:")
        for seconds, path in sorted(helpline.latencies, reverse=True)[:5]:
            print(f"  {seconds * 1000:8.1f} ms  {path}")
        checks.append(
            (
                f"parsing >= {MIN_PARSE_RATE:.0f} mails/s (CPU)",
                helpline.rate_cpu >= MIN_PARSE_RATE and not helpline.errors,
                f"{helpline.rate_cpu:.0f}/s",
            )
        )
    elif note:
        print(f"\n(a) parsing: SKIPPED, {note}")
    if smtp:
        print(
            f"\n(b) SMTP intake, {args.clients} concurrent connections, {args.mails} mails "
            f"(+{args.warmup} warm-up), SQLite durable (WAL, synchronous=FULL)"
        )
        head = (
            f"{'name':<10} | {'mails':>6} | {'errors':>6} | {'mails/s':>8} | {'p50 ms':>7} | "
            f"{'p99 ms':>7} | {'CPU srv/cli':>11}"
        )
        print(head)
        print("-" * len(head))
        for server in smtp.values():
            errors = sum(server.sample.errors.values())
            print(
                f"{server.name:<10} | {server.mails:>6} | {errors:>6} | "
                f"{server.throughput:>8.0f} | {server.ms(0.5):>7.1f} | {server.ms(0.99):>7.1f} | "
                f"{server.server_cpu:>5.0%}/{server.client_cpu:<5.0%}"
            )
        for server in smtp.values():
            for key, n in sorted(server.sample.errors.items()):
                print(f"  {server.name} error: {key} x{n}")
        print("(CPU: share of one core used by the server process / by the client threads)")
        helpline_smtp = smtp.get("helpline")
        reference = smtp.get("reference")
        if helpline_smtp and reference and reference.throughput:
            print(
                f"helpline / reference throughput: "
                f"{helpline_smtp.throughput / reference.throughput:.2f}"
            )
        if helpline_smtp:
            cost = parse_cost_of_bench_mails()
            per_mail_ms = helpline_smtp.server_cpu / helpline_smtp.throughput * 1000
            print(
                f"helpline server CPU per mail: {per_mail_ms:.2f} ms, of which parse_email "
                f"~{cost / 1000:.2f} ms (measured here on the same kind of mail)"
            )
            checks.append(
                (
                    f"SMTP intake >= {MIN_SMTP_RATE:.0f} mails/s",
                    helpline_smtp.throughput >= MIN_SMTP_RATE,
                    f"{helpline_smtp.throughput:.0f}/s",
                )
            )
            checks.append(
                (
                    "SMTP: no errors",
                    not helpline_smtp.sample.errors,
                    str(sum(helpline_smtp.sample.errors.values())),
                )
            )
    print()
    for label, ok, value in checks:
        print(f"  {verdict(ok)}  {label:<34} ({value})")
    return all(ok for _, ok, _ in checks)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--only", choices=["parse", "smtp"], help="run one part, not both")
    p.add_argument("--rounds", type=int, default=2, help="parsing rounds (the best is kept)")
    p.add_argument("--mails", type=int, default=2000, help="measured SMTP mails per server")
    p.add_argument("--warmup", type=int, default=200, help="unmeasured SMTP mails first")
    p.add_argument("--clients", type=int, default=8, help="concurrent SMTP connections")
    p.add_argument(
        "--no-reference", action="store_true", help="skip the bare aiosmtpd reference server"
    )
    p.add_argument("--profile", action="store_true", help="print the helpline pid first")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parsed: list[ParseResult] = []
    note = ""
    smtp: dict[str, SmtpResult] = {}
    if args.only in (None, "parse"):
        parsed, note = run_parse(args)
    if args.only in (None, "smtp"):
        names = ["helpline"] if args.no_reference else ["reference", "helpline"]
        with workdir(args.keep) as work:
            for name in names:
                print(f"SMTP: benchmarking {name} ...", flush=True)
                smtp[name] = run_smtp_one(name, args, work)
    passed = report(parsed, note, smtp, args)
    return 1 if args.check and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
