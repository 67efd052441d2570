"""JSON intake benchmark: helpline vs a bare aiohttp + SQLite handler, measured in the same run.

Each server runs in its own subprocess on a loopback port; the load generator (this process, or
``--procs`` worker processes) keeps ``--concurrency`` requests in flight, every one a distinct
message with a distinct ``Idempotency-Key``. Both servers commit durably (WAL,
``synchronous=FULL``): helpline through its group-commit writer, the reference with one
``INSERT`` + ``COMMIT`` per request.

    python -m bench.intake                       # the default run (well under 2 minutes)
    python -m bench.intake --requests 5000 --concurrency 50 --procs 2 --check
    python -m bench.intake --postgres --servers 3 --json out.json   # 3 processes, one database

``--postgres [URL]`` runs both servers on PostgreSQL instead: each on a scratch database created
on the server of URL (default ``postgresql://postgres@127.0.0.1:5432/test``) and dropped
afterwards; the reference is then ``bench/reference_server.py --pg`` (asyncpg, one autocommit
INSERT per request). ``--servers N`` starts N ``helpline serve`` processes, each on its own port,
on the one database (as in docs/deployment.md), and the load generator spreads its connections
over the ports round-robin. ``--json PATH`` also writes the results and the checks as JSON
(``python -m bench`` reads it).

Targets (the issue's): helpline >= 1,500 tickets/s with p99 < 50 ms at 50 clients, >= 50% of the
reference's throughput, idle RSS < 150 MB. Exit status is 0 unless ``--check`` is given and a
target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from yarl import URL

from bench.http_load import Client

MIN_THROUGHPUT = 1500.0  # tickets/s
MAX_P99_MS = 50.0
MIN_RATIO = 0.5  # of the reference's throughput
MAX_IDLE_RSS_MB = 150.0
STARTUP_TIMEOUT = 30.0
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"

ROOT = Path(__file__).resolve().parent.parent
BODY = (
    "Hello, my order #{i} arrived damaged: the box was crushed and two items are broken. "
    "Could you send a replacement or refund it? Photos available on request. Thanks!"
)


# -- load generation -------------------------------------------------------------------------


@dataclass
class Sample:
    """What one load-generator process measured."""

    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    errors: dict[str, int] = field(default_factory=dict)  # "status 500" / exception name -> count
    started: float = 0.0  # wall clock, so samples from several processes line up
    finished: float = 0.0
    cpu: float = 0.0  # CPU seconds this process spent generating load


def payload(tag: str, i: int) -> dict[str, str]:
    return {
        "name": f"Customer {i}",
        "email": f"customer-{tag}-{i}@example.com",
        "subject": f"Damaged order #{i}",
        "body": BODY.format(i=i),
    }


async def _drive(
    urls: list[str],
    tag: str,
    indices: list[int],
    concurrency: int,
    start_at: float,
    offset: int,
    client: str = "lean",
) -> Sample:
    sample = Sample()
    pending = iter(indices)

    async def worker(url: str, session: aiohttp.ClientSession | None) -> None:
        target = URL(url)
        lean = Client(target.host or "127.0.0.1", target.port or 80) if session is None else None
        try:
            for i in pending:  # a shared iterator: each index is taken once
                headers = {"Idempotency-Key": f"bench-{tag}-{i}"}
                began = time.perf_counter()
                try:
                    if lean is not None:
                        body = json.dumps(payload(tag, i)).encode()
                        status = await asyncio.wait_for(lean.post(target.path, body, headers), 30)
                    else:
                        assert session is not None
                        async with session.post(url, json=payload(tag, i), headers=headers) as r:
                            await r.read()
                            status = r.status
                except Exception as err:  # counted, the run goes on
                    key = type(err).__name__
                    sample.errors[key] = sample.errors.get(key, 0) + 1
                    continue
                if 200 <= status < 300:
                    sample.latencies.append(time.perf_counter() - began)
                else:
                    key = f"status {status}"
                    sample.errors[key] = sample.errors.get(key, 0) + 1
        finally:
            if lean is not None:
                lean.close()

    async with contextlib.AsyncExitStack() as stack:
        session = None
        if client == "aiohttp":
            connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
            timeout = aiohttp.ClientTimeout(total=30)
            session = await stack.enter_async_context(
                aiohttp.ClientSession(connector=connector, timeout=timeout)
            )
        await asyncio.sleep(max(0.0, start_at - time.time()))
        cpu0 = time.process_time()
        sample.started = time.time()
        # worker k of the whole load generator talks to server k mod N (keep-alive connections)
        await asyncio.gather(
            *(worker(urls[(offset + k) % len(urls)], session) for k in range(concurrency))
        )
        sample.finished = time.time()
        sample.cpu = time.process_time() - cpu0
    return sample


def drive(
    urls: list[str],
    tag: str,
    indices: list[int],
    concurrency: int,
    start_at: float,
    offset: int,
    client: str = "lean",
) -> Sample:
    return asyncio.run(_drive(urls, tag, indices, concurrency, start_at, offset, client))


def load(
    pool: ProcessPoolExecutor | None,
    urls: list[str],
    tag: str,
    total: int,
    concurrency: int,
    procs: int,
    client: str = "lean",
) -> list[Sample]:
    """``total`` requests with ``concurrency`` in flight, split over ``procs`` processes and
    spread over the servers at ``urls``."""
    if pool is None:
        return [drive(urls, tag, list(range(total)), concurrency, time.time(), 0, client)]
    start_at = time.time() + 0.3  # all processes begin together, after they are scheduled
    futures = []
    offset = 0
    for p in range(procs):
        share = list(range(p, total, procs))
        workers = concurrency // procs + (1 if p < concurrency % procs else 0)
        futures.append(pool.submit(drive, urls, tag, share, workers, start_at, offset, client))
        offset += workers
    return [f.result() for f in futures]


# -- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    base_url: str
    log: Path

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def peak_rss_mb(self) -> float:
        """VmHWM: the high-water mark of the resident set since the process started."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        """User + system time of the server's processes (all threads, forked workers too)."""
        total = 0.0
        for proc in [self.ps, *self.ps.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = proc.cpu_times()
                total += t.user + t.system
        return total


def helpline_config(
    work: Path, port: int, database_url: str | None = None, event_loop: str = "uvloop"
) -> Path:
    data = work / "helpline-data"
    config = work / "helpline.toml"
    url = database_url or f"sqlite:///{data}/helpline.db"
    config.write_text(
        f"""
[service]
name = "Bench Support"
public_url = "http://127.0.0.1:{port}"
data_dir = "{data}"
log_level = "warning"
event_loop = "{event_loop}"

[database]
url = "{url}"
durable = true

[intake]
rate_limit_per_minute = 100000000

[email.smtp_server]
enabled = false  # no SMTP listener: port 2525 is not ours to take, and N processes would clash
""".lstrip()
    )
    return config


def helpline_command(config: Path, port: int, workers: int = 1) -> list[str]:
    script = Path(sys.executable).with_name("helpline")
    entry = [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]
    return [
        *entry,
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def start(
    name: str, command: list[str], port: int, work: Path, env: dict[str, str] | None = None
) -> Server:
    log = work / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=None if env is None else {**os.environ, **env},
        )
    server = Server(name, proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited at startup:\n{log.read_text()[-3000:]}")
        if _listening(port) and asyncio.run(_healthy(server.base_url)):
            return server
        time.sleep(0.1)
    stop(server)
    raise RuntimeError(f"{name} did not answer /healthz in {STARTUP_TIMEOUT:.0f}s")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


async def _healthy(base_url: str) -> bool:
    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
        async with aiohttp.ClientSession() as s, s.get(f"{base_url}/healthz") as resp:
            return resp.status == 200
    return False


def stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGINT)  # aiohttp's run_app shuts down cleanly on it
        try:
            server.proc.wait(10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


# -- one measured server ---------------------------------------------------------------------


@contextlib.contextmanager
def scratch_database(admin_url: str, name: str) -> Iterator[str]:
    """A new PostgreSQL database on the server of ``admin_url``, dropped afterwards."""
    import asyncpg

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def postgres_cpu_seconds() -> float:
    """User + system time of this machine's PostgreSQL processes (all sessions: keep the
    machine otherwise idle while measuring), with that of the backends that have exited: the
    postmaster reaps them, so theirs is in its children's times. (A pool closes its overflow
    connections when the load ends; without their share, the database's CPU read half.)"""
    total = 0.0
    for proc in psutil.process_iter(["name", "cpu_times"]):
        times = proc.info["cpu_times"]
        if (proc.info["name"] or "").startswith("postgres") and times:
            total += times.user + times.system + times.children_user + times.children_system
    return total


def busy_share(before: Any, after: Any, wall: float) -> float:
    """Share of all cores that were not idle between two ``psutil.cpu_times()`` readings:
    what the processes were charged plus the kernel's own work (softirq: loopback TCP) and the
    hypervisor's steal, which no process's times show."""
    idle = (after.idle - before.idle) + (after.iowait - before.iowait)
    return max(0.0, 1 - idle / (wall * (os.cpu_count() or 1))) if wall > 0 else 0.0


@dataclass
class Result:
    name: str
    requests: int
    errors: dict[str, int]
    seconds: float
    latencies: list[float]
    rss_idle: float
    rss_after: float
    rss_peak: float
    server_cpu: float  # fraction of one core the server used during the measured phase
    client_cpu: float  # the same, summed over the load-generator processes
    database_cpu: float = 0.0  # the same, PostgreSQL's processes (0 on SQLite: in the server)
    processes: int = 1  # serving processes (--servers); RSS figures are their sums
    rss_peaks: list[float] = field(default_factory=list)  # each process's VmHWM
    machine_busy: float = 0.0  # share of all cores busy (any process, the kernel) meanwhile

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def cpu_ms_per_request(self) -> tuple[float, float, float]:
        """(server, database, load generator) CPU milliseconds per successful request."""
        per = 1000 / self.throughput if self.throughput else float("nan")
        return self.server_cpu * per, self.database_cpu * per, self.client_cpu * per

    def ceiling(self, cores: int) -> float:
        """The throughput at which these CPU costs per request would fill every core: no number
        of serving processes gets past it on this machine."""
        return 1000 * cores / sum(self.cpu_ms_per_request())

    def headroom(self) -> float:
        """How much more throughput the idle part of the machine could give at most (e.g.
        1.18: one process kept it 85% busy): more processes cannot do better here."""
        return 1 / self.machine_busy if self.machine_busy else float("nan")

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def measure(
    servers: list[Server], args: argparse.Namespace, pool: ProcessPoolExecutor | None
) -> Result:
    urls = [f"{server.base_url}/api/v1/messages" for server in servers]
    time.sleep(args.settle)  # let start-up garbage be collected before idle RSS is read
    rss_idle = sum(server.rss_mb() for server in servers)
    tag = f"{servers[0].name}-{os.getpid()}-{int(time.time())}"
    if args.warmup:
        load(pool, urls, f"{tag}-w", args.warmup, args.concurrency, args.procs, args.client)
    cpu0 = sum(server.cpu_seconds() for server in servers)
    db0 = postgres_cpu_seconds() if args.postgres else 0.0
    machine0, wall0 = psutil.cpu_times(), time.monotonic()
    samples = load(pool, urls, tag, args.requests, args.concurrency, args.procs, args.client)
    machine_busy = busy_share(machine0, psutil.cpu_times(), time.monotonic() - wall0)
    seconds = max(s.finished for s in samples) - min(s.started for s in samples)
    server_cpu = (sum(server.cpu_seconds() for server in servers) - cpu0) / seconds
    database_cpu = (postgres_cpu_seconds() - db0) / seconds if args.postgres else 0.0
    errors: dict[str, int] = {}
    for s in samples:
        for key, n in s.errors.items():
            errors[key] = errors.get(key, 0) + n
    peaks = [server.peak_rss_mb() for server in servers]
    return Result(
        name=servers[0].name,
        requests=args.requests,
        errors=errors,
        seconds=seconds,
        latencies=[x for s in samples for x in s.latencies],
        rss_idle=rss_idle,
        rss_after=sum(server.rss_mb() for server in servers),
        rss_peak=sum(peaks),
        server_cpu=server_cpu,
        client_cpu=sum(s.cpu for s in samples) / seconds,
        database_cpu=database_cpu,
        processes=len(servers),
        rss_peaks=peaks,
        machine_busy=machine_busy,
    )


def run_one(
    name: str, args: argparse.Namespace, pool: ProcessPoolExecutor | None, work: Path
) -> Result:
    with contextlib.ExitStack() as stack:
        database_url = None
        if args.postgres:
            scratch = f"bench_intake_{os.getpid()}_{name}"
            database_url = stack.enter_context(scratch_database(args.postgres, scratch))
        servers: list[Server] = []
        try:
            if name == "helpline":
                ports = [free_port() for _ in range(args.servers)]
                config = helpline_config(work, ports[0], database_url, args.event_loop)
                # one signing key for all the processes, as docs/deployment.md asks
                env = {"HELPLINE_SECRET_KEY": "bench-" + "k" * 40} if args.servers > 1 else None
                for k, port in enumerate(ports):  # the first migrates; the others find it done
                    command = helpline_command(config, port, args.workers)
                    label = name if k == 0 else f"{name}-{k + 1}"
                    servers.append(start(label, command, port, work, env))
                servers[0].name = name
            else:  # as many reference processes as helpline ones (--servers), one database
                where = (
                    ["--pg", database_url, "--pool", str(args.pg_pool)]
                    if database_url
                    else ["--db", str(work / "reference.db")]
                )
                for k in range(args.servers):
                    port = free_port()
                    command = [
                        sys.executable, "-m", "bench.reference_server", *where, "--port", str(port),
                    ]  # fmt: skip
                    label = name if k == 0 else f"{name}-{k + 1}"
                    servers.append(start(label, command, port, work))
                servers[0].name = name
            if args.profile and name == "helpline":
                pids = ", ".join(str(server.proc.pid) for server in servers)
                print(f"helpline pid {pids} (attach a profiler now)", flush=True)
            return measure(servers, args, pool)
        finally:
            for server in servers:
                stop(server)


# -- report ----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def backend(args: argparse.Namespace) -> str:
    if args.postgres:
        return "PostgreSQL (scratch database, synchronous_commit on)"
    return "SQLite durable (WAL; helpline: fsync per group commit; reference: synchronous=FULL)"


def targets(results: dict[str, Result]) -> list[tuple[str, bool, str]]:
    """The issue's targets as (label, met, measured value); empty without a helpline result."""
    helpline = results.get("helpline")
    if helpline is None:
        return []
    checks = [
        (
            f"throughput >= {MIN_THROUGHPUT:.0f}/s",
            helpline.throughput >= MIN_THROUGHPUT,
            f"{helpline.throughput:.0f}/s",
        ),
        (
            f"p99 < {MAX_P99_MS:.0f} ms",
            helpline.percentile(0.99) < MAX_P99_MS,
            f"{helpline.percentile(0.99):.1f} ms",
        ),
        (
            f"idle RSS < {MAX_IDLE_RSS_MB:.0f} MB",
            helpline.rss_idle / helpline.processes < MAX_IDLE_RSS_MB,
            f"{helpline.rss_idle / helpline.processes:.0f} MB per process",
        ),
        ("no errors", not helpline.errors, str(sum(helpline.errors.values()))),
    ]
    reference = results.get("reference")
    if reference is not None and reference.throughput:
        ratio = helpline.throughput / reference.throughput
        label = f"ratio >= {MIN_RATIO:.0%} of reference"
        checks.append((label, ratio >= MIN_RATIO, f"{ratio:.0%}"))
    return checks


def write_json(path: str, results: dict[str, Result], args: argparse.Namespace) -> None:
    """What ``python -m bench`` reads: the figures of each server and the checks."""
    data = {
        "backend": "postgresql" if args.postgres else "sqlite",
        "concurrency": args.concurrency,
        "requests": args.requests,
        "procs": args.procs,
        "servers": args.servers,
        "workers": args.workers,
        "loadavg": os.getloadavg(),
        "results": {
            name: {
                "requests": r.requests,
                "ok": r.ok,
                "errors": r.errors,
                "seconds": r.seconds,
                "throughput": r.throughput,
                "p50_ms": r.percentile(0.50),
                "p99_ms": r.percentile(0.99),
                "rss_idle_mb": r.rss_idle,
                "rss_after_mb": r.rss_after,
                "rss_peak_mb": r.rss_peak,
                "rss_peaks_mb": r.rss_peaks,
                "processes": r.processes,
                "server_cpu": r.server_cpu,
                "client_cpu": r.client_cpu,
                "database_cpu": r.database_cpu,
                "cpu_ms_per_request": r.cpu_ms_per_request(),
                "ceiling": r.ceiling(os.cpu_count() or 1),
                "machine_busy": r.machine_busy,
            }
            for name, r in results.items()
        },
        "checks": [{"label": a, "ok": b, "value": c} for a, b, c in targets(results)],
    }
    Path(path).write_text(json.dumps(data, indent=1, allow_nan=True))


def report(results: dict[str, Result], args: argparse.Namespace) -> bool:
    head = (
        f"{'name':<10} | {'requests':>8} | {'errors':>6} | {'req/s':>8} | {'p50 ms':>7} | "
        f"{'p99 ms':>7} | {'RSS MB idle/after/peak':>22} | {'CPU srv/cli':>11}"
    )
    print()
    print(
        f"JSON intake, {backend(args)}, {args.concurrency} concurrent clients, "
        f"{args.requests} requests (+{args.warmup} warm-up), helpline serving processes: "
        f"{args.servers} x --workers {args.workers}, load generator: {args.procs} process(es) "
        f"({args.client} client), "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(head)
    print("-" * len(head))
    for r in results.values():
        rss = f"{r.rss_idle:.0f}/{r.rss_after:.0f}/{r.rss_peak:.0f}"
        cpu = f"{r.server_cpu:.0%}/{r.client_cpu:.0%}"
        print(
            f"{r.name:<10} | {r.requests:>8} | {sum(r.errors.values()):>6} | "
            f"{r.throughput:>8.0f} | {r.percentile(0.50):>7.1f} | {r.percentile(0.99):>7.1f} | "
            f"{rss:>22} | {cpu:>11}"
        )
    for r in results.values():
        for key, n in sorted(r.errors.items()):
            print(f"  {r.name} error: {key} x{n}")
    print(
        "(CPU: share of one core used by the server process(es) / by the load generator; "
        "RSS: summed over the serving processes)"
    )
    cores = os.cpu_count() or 1
    print(f"\nCPU ms per request (server / database / load generator), ceiling on {cores} cores:")
    for r in results.values():
        server, database, client = r.cpu_ms_per_request()
        print(
            f"  {r.name:<10} {server:.2f} / {database:.2f} / {client:.2f} ms"
            f" -> at most {r.ceiling(cores):,.0f} req/s with every core busy"
        )
    print(f"\nMachine busy meanwhile (all {cores} cores, kernel included), and what is left:")
    for r in results.values():
        print(
            f"  {r.name:<10} {r.machine_busy:.0%} busy -> at most {r.headroom():.2f}x this "
            "throughput with every core busy"
        )

    helpline = results.get("helpline")
    if helpline is None:
        return True
    checks = targets(results)
    reference = results.get("reference")
    if reference is not None and reference.throughput:
        print(
            f"\nhelpline / reference throughput: {helpline.throughput / reference.throughput:.2f}"
        )
    print()
    for label, ok, value in checks:
        print(f"  {verdict(ok)}  {label:<28} ({value})")
    return all(ok for _, ok, _ in checks)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--requests", type=int, default=3000, help="measured requests per server")
    p.add_argument("--warmup", type=int, default=500, help="unmeasured requests first")
    p.add_argument("--concurrency", type=int, default=50, help="requests in flight")
    p.add_argument(
        "--procs", type=int, default=1, help="load-generator processes (1: this process)"
    )
    p.add_argument("--only", choices=["helpline", "reference"], help="measure one server, not both")
    p.add_argument("--settle", type=float, default=1.0, help="seconds idle before RSS is read")
    p.add_argument("--profile", action="store_true", help="print the helpline pid first")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="helpline serving processes (`helpline serve --workers N`)",
    )
    p.add_argument(
        "--event-loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="helpline's service.event_loop (compare the two)",
    )
    p.add_argument(
        "--servers",
        type=int,
        default=1,
        help="separate `helpline serve` processes, each on its own port, one database",
    )
    p.add_argument(
        "--postgres",
        nargs="?",
        const=POSTGRES_URL,
        default=None,
        metavar="URL",
        help=f"run both servers on scratch PostgreSQL databases (default server {POSTGRES_URL})",
    )
    p.add_argument("--pg-pool", type=int, default=20, help="the reference's asyncpg pool size")
    p.add_argument(
        "--client",
        choices=["lean", "aiohttp"],
        default="lean",
        help="load generator: bench/http_load.py (default) or aiohttp's client",
    )
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.servers > 1 and not args.postgres:
        p.error("--servers > 1 needs --postgres (processes on one SQLite file would each lead)")
    return args


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="helpline-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [args.only] if args.only else ["reference", "helpline"]
    pool = None
    if args.procs > 1:
        pool = ProcessPoolExecutor(args.procs, mp_context=get_context("spawn"))
    results: dict[str, Result] = {}
    try:
        with workdir(args.keep) as work:
            for name in names:
                print(f"benchmarking {name} ...", flush=True)
                results[name] = run_one(name, args, pool, work)
    finally:
        if pool is not None:
            pool.shutdown()
    passed = report(results, args)
    if args.json:
        write_json(args.json, results, args)
    return 1 if args.check and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
