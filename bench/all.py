"""Every benchmark of the project in one run, one table: ``python -m bench``.

Each benchmark runs in a child process of its own (``python -m bench.all --child NAME``), which
imports the benchmark's module and calls it (its own ``main``/``run`` and helpers, so nothing
is measured differently from running the script alone); the figures are taken from the objects
the script builds (``bench/intake.py``: its ``--json`` output; the others: their result rows,
captured by wrapping the helper that makes them) and handed back as JSON. PASS/FAIL is the
script's own verdict against its target. The detailed output of every script is kept in a log
directory printed at the end.

Rows, in order:

- JSON intake on SQLite (durable) beside its reference, a bare aiohttp + SQLite INSERT server;
- JSON intake on PostgreSQL with 1 ``helpline serve`` process beside its reference, a bare
  aiohttp + asyncpg INSERT server, then with 3 processes on their own ports on one database (the
  load generator spreads over the ports), and the ratio 3 processes / 1 process (target >= 1.4);
  each on scratch databases created and dropped by ``bench/intake.py --postgres``;
- the intake unit alone (CPU per ticket, no target), email parsing and SMTP intake, KB
  suggestions, outbound pacing, SLA sweep, routing rules, dashboard KPIs.

    python -m bench                 # everything, default sizes (~7-15 minutes)
    python -m bench --quick         # smaller sizes, a few minutes
    python -m bench --check         # exit 1 when any benchmark misses its target or fails
    python -m bench --only intake-pg,kb --quick
    python -m bench --list

Peak RSS is the serving process's high-water mark (``VmHWM``; summed over processes when there
are several) where there is a server, else the benchmark process's own (marked "proc").
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
MIN_SCALING = 1.4  # PostgreSQL: 3 processes / 1 process (the target on 2 cores)


@dataclass
class Row:
    """One line of the table."""

    benchmark: str
    throughput: str = ""
    p50: str = ""
    p99: str = ""
    rss: str = ""
    reference: str = ""
    target: str = ""
    status: str = "INFO"  # PASS, FAIL, INFO, ERROR, SKIP
    note: str = ""
    load: str = ""  # the machine's load average (1 min) when the benchmark ended
    numbers: dict[str, Any] = field(default_factory=dict)  # raw figures, for the JSON output


# -- helpers for the children ----------------------------------------------------------------


def own_peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fmt(value: float, digits: int = 0, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}{unit}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


@contextlib.contextmanager
def spy(module: Any, name: str, record: list[Any], keep: str = "result") -> Iterator[None]:
    """Wrap ``module.name`` so each call's result (or arguments) is appended to ``record``."""
    original = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if keep == "args":
            record.append((args, kwargs))
        result = original(*args, **kwargs)
        if keep == "result":
            record.append(result)
        elif keep == "both":
            record.append((args, result))
        return result

    if not isinstance(original, type):  # a class (a result row) stays a plain callable
        wrapper = functools.wraps(original)(wrapper)
    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


# -- the benchmarks, each run in its own child process ---------------------------------------

Runner = Callable[[bool, argparse.Namespace], list[Row]]
RUNNERS: dict[str, tuple[str, Runner]] = {}


def runner(name: str, what: str) -> Callable[[Runner], Runner]:
    def register(fn: Runner) -> Runner:
        RUNNERS[name] = (what, fn)
        return fn

    return register


def _intake(argv: list[str]) -> dict[str, Any]:
    from bench import intake

    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        intake.main([*argv, "--json", out.name])
        return json.loads(Path(out.name).read_text())


def _intake_rows(data: dict[str, Any], label: str, ref_label: str) -> list[Row]:
    rows = []
    results = data["results"]
    ref = results.get("reference")
    if ref is not None:
        rows.append(
            Row(
                ref_label,
                fmt(ref["throughput"], 0, " req/s"),
                fmt(ref["p50_ms"], 1),
                fmt(ref["p99_ms"], 1),
                fmt(ref["rss_peak_mb"]),
                "(is the reference)",
                "-",
                "INFO" if not ref["errors"] else "FAIL",
                f"{sum(ref['errors'].values())} errors" if ref["errors"] else "",
                numbers=ref,
            )
        )
    h = results["helpline"]
    rss = fmt(h["rss_peak_mb"])
    if h["processes"] > 1:
        rss += " (" + " + ".join(fmt(x) for x in h["rss_peaks_mb"]) + ")"
    rows.append(
        Row(
            label,
            fmt(h["throughput"], 0, " tickets/s"),
            fmt(h["p50_ms"], 1),
            fmt(h["p99_ms"], 1),
            rss,
            f"{h['throughput'] / ref['throughput']:.2f}x of reference" if ref else "",
            "",
            "",
            f"CPU srv/cli {h['server_cpu']:.0%}/{h['client_cpu']:.0%}",
            numbers=h,
        )
    )
    return rows


def _intake_sizes(quick: bool) -> list[str]:
    return ["--requests", "1500", "--warmup", "300"] if quick else []


@runner("intake-sqlite", "JSON intake on SQLite + its reference (bench/intake.py)")
def run_intake_sqlite(quick: bool, opts: argparse.Namespace) -> list[Row]:
    data = _intake(_intake_sizes(quick))
    rows = _intake_rows(
        data, "JSON intake, SQLite durable, 1 process", "reference: aiohttp + SQLite INSERT"
    )
    checks = data["checks"]
    rows[-1].target = ">= 1,500/s, p99 < 50 ms, >= 50% of ref, idle RSS < 150 MB"
    rows[-1].status = verdict(all(c["ok"] for c in checks))
    missed = [f"{c['label']} ({c['value']})" for c in checks if not c["ok"]]
    if missed:
        rows[-1].note = "missed: " + "; ".join(missed) + "; " + rows[-1].note
    return rows


def _pg_sizes(quick: bool) -> list[str]:
    return ["--requests", "1000", "--warmup", "200"] if quick else ["--requests", "3000"]


@runner("intake-pg", "JSON intake on PostgreSQL, 1 and 3 processes, + its reference")
def run_intake_pg(quick: bool, opts: argparse.Namespace) -> list[Row]:
    base = [*_pg_sizes(quick), "--postgres", opts.postgres]
    one = _intake(base)
    # the reference with 3 processes too: how far this machine lets a bare handler scale
    three = _intake([*base, "--servers", "3"])
    rows = _intake_rows(
        one, "JSON intake, PostgreSQL, 1 process", "reference: aiohttp + PostgreSQL INSERT"
    )
    rows += _intake_rows(
        three,
        "JSON intake, PostgreSQL, 3 processes (3 ports)",
        "reference: aiohttp + PostgreSQL INSERT, 3 processes",
    )
    r1, r3 = one["results"]["reference"], three["results"]["reference"]
    if r1["throughput"]:
        rows[2].reference = f"{r3['throughput'] / r1['throughput']:.2f}x of 1 process"
    h1, h3 = one["results"]["helpline"], three["results"]["helpline"]
    ratio = h3["throughput"] / h1["throughput"] if h1["throughput"] else float("nan")
    errors = sum(h1["errors"].values()) + sum(h3["errors"].values())
    rows[1].status = "INFO" if not h1["errors"] else "FAIL"
    rows[-1].reference = f"{ratio:.2f}x of 1 process"
    rows[-1].target = f"3 / 1 process >= {MIN_SCALING}x"
    rows[-1].status = verdict(ratio >= MIN_SCALING and errors == 0)
    rows[-1].numbers = {**h3, "ratio_3_to_1": ratio}
    return rows


@runner("unit", "the intake unit alone, CPU per ticket (bench/unit_profile.py)")
def run_unit(quick: bool, opts: argparse.Namespace) -> list[Row]:
    from bench import unit_profile

    count = 1500 if quick else 3000
    with tempfile.TemporaryDirectory(prefix="helpline-unit-") as tmp:
        settings = unit_profile.settings_for(Path(tmp))
        unit_profile.run(settings, "warm", 200, 50)
        seconds = unit_profile.run(settings, "measured", count, 50)
    us = seconds / count * 1e6
    return [
        Row(
            "intake unit alone (no HTTP), SQLite, batches of 50",
            fmt(count / seconds, 0, " tickets/s CPU"),
            rss=fmt(own_peak_rss_mb()) + " proc",
            note=f"{us:.0f} us CPU per ticket",
            numbers={"us_per_ticket": us},
        )
    ]


@runner("email", "email parsing over the corpus and SMTP intake (bench/email.py)")
def run_email(quick: bool, opts: argparse.Namespace) -> list[Row]:
    from bench import email as bench_email

    reports: list[Any] = []
    stopped: dict[str, float] = {}
    original_stop = bench_email.stop

    def stop(server: Any) -> None:
        with contextlib.suppress(Exception):
            stopped[server.name] = server.peak_rss_mb()
        original_stop(server)

    argv = ["--check"] + (["--rounds", "1", "--mails", "600", "--warmup", "100"] if quick else [])
    bench_email.stop = stop
    try:
        with spy(bench_email, "report", reports, keep="args"):
            code = bench_email.main(argv)
    finally:
        bench_email.stop = original_stop
    (parsed, note, smtp, args), _ = reports[0]
    rows = []
    if parsed:
        h, ref = parsed
        ok = h.rate_cpu >= bench_email.MIN_PARSE_RATE and not h.errors
        rows.append(
            Row(
                "email parsing, corpus, one core",
                fmt(h.rate_cpu, 0, " mails/s CPU"),
                fmt(h.ms(0.5), 2),
                fmt(h.ms(0.99), 2),
                fmt(own_peak_rss_mb()) + " proc",
                f"stdlib {fmt(ref.rate_cpu)}/s ({h.rate_cpu / ref.rate_cpu:.2f}x)",
                f">= {bench_email.MIN_PARSE_RATE:.0f} mails/s",
                verdict(ok),
                f"{h.mails} mails, best of {args.rounds}",
                numbers={"rate_cpu": h.rate_cpu, "stdlib_rate_cpu": ref.rate_cpu},
            )
        )
    else:
        rows.append(Row("email parsing, corpus, one core", status="SKIP", note=note))
    h_smtp, ref_smtp = smtp.get("helpline"), smtp.get("reference")
    if h_smtp is not None:
        errors = sum(h_smtp.sample.errors.values())
        ok = h_smtp.throughput >= bench_email.MIN_SMTP_RATE and not errors
        reference = ""
        if ref_smtp is not None and ref_smtp.throughput:
            reference = (
                f"aiosmtpd + SQLite INSERT {ref_smtp.throughput:,.0f}/s "
                f"({h_smtp.throughput / ref_smtp.throughput:.2f}x), peak RSS "
                f"{fmt(stopped.get('reference', float('nan')))}"
            )
        rows.append(
            Row(
                f"SMTP intake, {args.clients} clients, SQLite durable",
                fmt(h_smtp.throughput, 0, " mails/s"),
                fmt(h_smtp.ms(0.5), 1),
                fmt(h_smtp.ms(0.99), 1),
                fmt(stopped.get("helpline", float("nan"))),
                reference,
                f">= {bench_email.MIN_SMTP_RATE:.0f} mails/s",
                verdict(ok),
                f"{errors} errors" if errors else "",
                numbers={"throughput": h_smtp.throughput, "errors": errors},
            )
        )
    del code
    return rows


@runner("kb", "KB top-3 suggestions over 10,000 articles (bench/kb.py)")
def run_kb(quick: bool, opts: argparse.Namespace) -> list[Row]:
    from bench import kb

    timed: list[Any] = []
    argv = ["--check"] + (["--queries", "500", "--naive-queries", "30"] if quick else [])
    with spy(kb, "_timed", timed):
        code = kb.main(argv)
    ours, naive = timed[0], timed[-1]
    wall = [t.wall_ms for t in ours]
    naive_wall = [t.wall_ms for t in naive]
    p99 = kb._p99(wall)
    return [
        Row(
            "KB top-3 suggestions, 10,000 articles",
            fmt(len(wall) / sum(wall) * 1000, 0, " queries/s"),
            fmt(sorted(wall)[len(wall) // 2], 2),
            fmt(p99, 2),
            fmt(own_peak_rss_mb()) + " proc",
            f"naive rapidfuzz p99 {kb._p99(naive_wall):,.0f} ms",
            f"p99 < {kb.MAX_P99_MS:.0f} ms",
            verdict(code == 0),
            f"{len(wall)} queries",
            numbers={"p99_ms": p99},
        )
    ]


@runner("outbound", "outbound pacing against strict fake Slack/Telegram (bench/outbound.py)")
def run_outbound(quick: bool, opts: argparse.Namespace) -> list[Row]:
    from bench import outbound

    runs: list[Any] = []
    flows: list[Any] = []
    argv = ["--check"] + (["--slack", "100", "--telegram", "300", "--chats", "30"] if quick else [])
    with spy(outbound, "report", runs, keep="args"), spy(outbound, "Flow", flows):
        code = outbound.main(argv)
    ((run,), _) = runs[0]
    slack, telegram = flows[0], flows[1]
    throttled = len(run.fakes["slack"].throttled) + len(run.fakes["telegram"].throttled)
    return [
        Row(
            f"outbound burst x{run.speedup:g} ({run.slack_total} Slack + {run.telegram_total} "
            "Telegram)",
            f"Slack {slack.rate:.3f}/s, Telegram {telegram.rate:.1f}/s",
            rss=fmt(own_peak_rss_mb()) + " proc",
            reference="allowed: Slack 1/s per channel, Telegram 30/s",
            target=">= 95% of allowed, 0 429s, all sent, no dups",
            status=verdict(code == 0),
            note=f"{throttled} 429s; {run.sent} sent, {run.dead} dead",
            numbers={"slack_rate": slack.rate, "telegram_rate": telegram.rate, "429s": throttled},
        )
    ]


@runner("sla", "SLA sweep over 100,000 open tickets (bench/sla.py)")
def run_sla(quick: bool, opts: argparse.Namespace) -> list[Row]:
    from bench import sla

    pure: list[Any] = []
    tables: list[Any] = []
    argv = ["--check"] + (["--no-db", "--runs", "3"] if quick else [])
    error: BaseException | None = None
    with spy(sla, "Row", pure), spy(sla, "db_table", tables, keep="both"):
        try:
            code = sla.main(argv)
        except Exception as err:  # the database scenario may fail after the pure rows are in
            import traceback

            traceback.print_exc()
            error, code = err, 1
    rows = []
    for r in pure:
        rows.append(
            Row(
                f"SLA sweep, 100,000 snapshots, {r.scenario.split(' (')[0]}",
                fmt(len_or(r), 0, " tickets/s"),
                f"median {r.median:.3f} s",
                f"max {r.max:.3f} s",
                fmt(own_peak_rss_mb()) + " proc",
                f"naive evaluate loop {r.naive:.2f} s ({r.naive / r.median:.0f}x)",
                "< 1 s",
                verdict(r.max < sla.MAX_SECONDS),
                f"{sum(r.signals.values()):,} signals",
            )
        )
    for (title, _open, _total, _now, db_rows), ok in tables:
        for r in db_rows:
            rows.append(
                Row(
                    f"SLA {r.name.split(' (')[0]}, {title.split(' (')[0]}",
                    "",
                    f"median {r.median:.3f} s",
                    f"max {max(r.seconds):.3f} s",
                    fmt(own_peak_rss_mb()) + " proc",
                    "",
                    "median < 1 s",
                    verdict(r.median < sla.MAX_SECONDS),
                    f"{r.signals:,} signals"
                    + ("" if r.fired is None else f", {r.fired:,} fired")
                    + f", CPU {sorted(r.cpu)[len(r.cpu) // 2]:.2f} s",
                )
            )
        del ok
    if error is not None:
        what = "SLA database scenario (find_signals, Helpdesk.sweep_sla), SQLite"
        rows.append(Row(what, status="ERROR", note=f"{type(error).__name__}: {error}"[:160]))
    elif not rows:
        rows.append(Row("SLA sweep", status=verdict(code == 0), note="see the log"))
    return rows


def len_or(r: Any) -> float:
    """Tickets per second of the sweep (100,000 / median)."""
    return 100_000 / r.median if r.median else float("nan")


@runner("routing", "routing rules, 50 rules (bench/routing.py)")
def run_routing(quick: bool, opts: argparse.Namespace) -> list[Row]:
    from bench import routing

    loops: list[Any] = []
    lats: list[Any] = []
    rounds = 1 if quick else 3
    argv = ["--check", "--rounds", str(rounds)]
    if quick:
        argv += ["--inputs", "30000", "--naive-inputs", "3000"]
    with spy(routing, "_timed_loop", loops, keep="both"), spy(routing, "_latencies_us", lats):
        code = routing.main(argv)
    n = len(loops[0][0][1])
    best = min(seconds for _, seconds in loops[:rounds])
    (_, naive_inputs), naive_s = loops[rounds + 1][0], loops[rounds + 1][1]
    ours = lats[0]
    return [
        Row(
            "routing rules, 50 rules",
            fmt(n / best, 0, " tickets/s"),
            fmt(routing._pct(ours, 0.5) / 1000, 3),
            fmt(routing._pct(ours, 0.99) / 1000, 3),
            fmt(own_peak_rss_mb()) + " proc",
            f"naive evaluator {len(naive_inputs) / naive_s:,.0f}/s",
            f">= {routing.MIN_TICKETS_PER_S:,}/s, same decisions",
            verdict(code == 0),
            f"{n:,} inputs, best of {rounds}",
            numbers={"throughput": n / best},
        )
    ]


@runner("reports", "dashboard KPIs over 1,000,000 tickets (bench/reports.py)")
def run_reports(quick: bool, opts: argparse.Namespace) -> list[Row]:
    from bench import reports

    tickets = 100_000 if quick else 1_000_000
    runs = 1 if quick else 3
    path = Path(f"/tmp/helpline-bench-reports-v{reports.VERSION}-{tickets}-1.db")
    if not path.exists():
        reports.build(path, tickets, 1)
    measured = reports.measure(path, runs, False, targets_only=True)
    ok = reports.table(f"{tickets:,} tickets", measured)
    worst = max(row.dashboard for row in measured)
    first = measured[0].dashboard
    return [
        Row(
            f"dashboard KPIs, {tickets:,} tickets, 30 days",
            fmt(1000 / first, 1, " dashboards/s"),
            f"{first:,.0f} ms",
            f"worst filter {worst:,.0f} ms",
            fmt(own_peak_rss_mb()) + " proc",
            "",
            "< 500 ms (over 1,000,000 tickets)",
            verdict(ok) if not quick else "INFO",
            f"median of {runs}; {len(measured)} cases"
            + ("; quick: 100k tickets, target not judged" if quick else ""),
            numbers={
                "ms": {row.case.name: row.dashboard for row in measured},
                "one_snapshot_ms": {row.case.name: row.one_snapshot for row in measured},
            },
        )
    ]


def child(name: str, quick: bool, out: str, opts: argparse.Namespace) -> int:
    os.chdir(ROOT)
    started = time.perf_counter()
    try:
        rows = RUNNERS[name][1](quick, opts)
    except BaseException as err:  # reported as an ERROR row; the traceback is in the log
        import traceback

        traceback.print_exc()
        rows = [Row(name, status="ERROR", note=f"{type(err).__name__}: {err}"[:200])]
    elapsed = time.perf_counter() - started
    payload = {"rows": [asdict(r) for r in rows], "seconds": elapsed}
    Path(out).write_text(json.dumps(payload, default=str))
    return 0


# -- the parent: run the children, print the table --------------------------------------------


def run_child(
    name: str, args: argparse.Namespace, logs: Path, timeout: float
) -> tuple[list[Row], float]:
    out = logs / f"{name}.json"
    log = logs / f"{name}.log"
    command = [sys.executable, "-m", "bench.all", "--child", name, "--out", str(out)]
    command += ["--postgres", args.postgres] + (["--quick"] if args.quick else [])
    started = time.perf_counter()
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # its own session: the benchmark's servers go with it
            proc.wait()
            return [Row(name, status="ERROR", note=f"timed out after {timeout:.0f} s")], timeout
    elapsed = time.perf_counter() - started
    if not out.exists():
        return [Row(name, status="ERROR", note=f"exit {proc.returncode}, see {log}")], elapsed
    data = json.loads(out.read_text())
    return [Row(**r) for r in data["rows"]], elapsed


COLUMNS = [
    ("benchmark", "benchmark"),
    ("throughput", "throughput"),
    ("p50", "p50 ms"),
    ("p99", "p99 ms"),
    ("rss", "peak RSS MB"),
    ("reference", "reference (same run)"),
    ("target", "target"),
    ("status", "result"),
    ("load", "load"),
    ("note", "notes"),
]


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |"]
    lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    for row in rows:
        cells = [
            " ".join(str(getattr(row, key) or "").replace("|", "/").split()) for key, _ in COLUMNS
        ]
        cells[7] = f"**{cells[7]}**" if cells[7] in ("FAIL", "ERROR") else cells[7]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").split("\n", 1)[0]
    )
    p.add_argument("--quick", action="store_true", help="smaller sizes: a few minutes in all")
    p.add_argument("--check", action="store_true", help="exit 1 when any target is missed")
    p.add_argument("--only", help="comma-separated benchmark names (see --list)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument(
        "--postgres",
        default=POSTGRES_URL,
        metavar="URL",
        help=f"server for the PostgreSQL scratch databases (default {POSTGRES_URL})",
    )
    p.add_argument("--timeout", type=float, default=0.0, help="seconds per benchmark (0: auto)")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    p.add_argument("--logs", metavar="DIR", help="where the scripts' output goes (default: temp)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args.child, args.quick, args.out, args)
    if args.list:
        for name, (what, _) in RUNNERS.items():
            print(f"{name:<15} {what}")
        return 0
    names = list(RUNNERS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in RUNNERS]
        if unknown:
            print(f"unknown benchmark(s): {', '.join(unknown)}; see --list", file=sys.stderr)
            return 2
    logs = Path(args.logs or tempfile.mkdtemp(prefix="helpline-bench-all-"))
    logs.mkdir(parents=True, exist_ok=True)
    timeout = args.timeout or (600.0 if args.quick else 1800.0)
    load0 = os.getloadavg()
    started = time.perf_counter()
    stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    mode = "quick" if args.quick else "default"
    print(
        f"python -m bench ({mode}): {len(names)} benchmarks; {os.cpu_count()} CPUs; "
        f"load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; logs in {logs}",
        flush=True,
    )
    rows: list[Row] = []
    loads: list[float] = [load0[0]]
    for name in names:
        print(f"  {name} ...", end=" ", flush=True)
        got, seconds = run_child(name, args, logs, timeout)
        loads.append(os.getloadavg()[0])
        for row in got:
            row.load = f"{loads[-1]:.1f}"
        statuses = ", ".join(r.status for r in got)
        print(f"{seconds:.0f} s ({statuses}; load average {loads[-1]:.2f})", flush=True)
        rows += got
    total = time.perf_counter() - started
    load1 = os.getloadavg()
    print()
    print(
        f"python -m bench ({mode}), {stamp}, {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}, {total / 60:.1f} min; load average (1 min) at start "
        f"{load0[0]:.2f}, between benchmarks {min(loads):.2f}-{max(loads):.2f}, at end "
        f"{load1[0]:.2f}"
    )
    print()
    print(table(rows))
    missed = [r for r in rows if r.status in ("FAIL", "ERROR")]
    print()
    print(
        f"{sum(r.status == 'PASS' for r in rows)} PASS, {sum(r.status == 'FAIL' for r in rows)} "
        f"FAIL, {sum(r.status == 'ERROR' for r in rows)} ERROR; detailed output: {logs}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "mode": mode,
                    "when": stamp,
                    "loadavg_start": load0,
                    "loadavg_end": load1,
                    "minutes": total / 60,
                    "rows": [asdict(r) for r in rows],
                },
                indent=1,
                default=str,
            )
        )
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
