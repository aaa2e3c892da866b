"""Proxy benchmark: the same local upstream hit directly and through a billed node; prints a table, writes JSON.

Run `.venv/bin/python -m bench.proxy_bench` (or `make bench`). Three processes: the lean upstream
(`bench.upstream`), the node (`routstr serve`, one worker, SQLite in a temp dir, a prepaid `sk-` key) and this
one, which generates the load (`bench.loadgen`). See bench/README.md for what each figure means.
(Owner: the [BENCH] engineer, issue 3 item 9.)
"""

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import httpx

from bench.loadgen import RunResult, Target, open_streams, run_load
from bench.upstream import MODEL_ID

ROOT: Final = Path(__file__).resolve().parents[1]
RESULTS: Final = ROOT / "bench" / "results" / "proxy.json"
BIN: Final = Path(sys.executable).parent
HOST: Final = "127.0.0.1"
CHAT_PATH: Final = "/v1/chat/completions"
KEY_BALANCE_SAT: Final = 100_000_000
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
TARGETS: Final = {
    "billed_rps_c16": 1000.0,
    "added_p50_ms_c1": 1.0,
    "added_p99_ms_c16": 5.0,
    "ttft_overhead_ms": 2.0,
    "rss_per_stream_kb": 50.0,
    "postgres_vs_sqlite_ratio": 2.0,
}


def say(line: str = "") -> None:
    print(line, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, process: "subprocess.Popen[bytes]", seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            if process.poll() is not None:
                msg = f"process {process.args!r} exited with {process.returncode}"
                raise RuntimeError(msg) from None
            if time.monotonic() > deadline:
                msg = f"nothing listens on {port} after {seconds} s"
                raise RuntimeError(msg) from None
            time.sleep(0.05)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    msg = f"no VmRSS for {pid}"
    raise RuntimeError(msg)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@contextmanager
def running(command: list[str], env: dict[str, str], log: Path, port: int) -> Iterator["subprocess.Popen[bytes]"]:
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)  # noqa: S603
    try:
        try:
            wait_port(port, process)
        except RuntimeError as exc:
            tail = log.read_text(errors="replace")[-2000:]
            msg = f"{exc}; its output ends with:\n{tail}"
            raise RuntimeError(msg) from None
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def node_env(database_url: str, upstream_port: int, port: int) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),  # noqa: TID251 - a child process env
        "DATABASE_URL": database_url,
        "CASHU_MINTS": "http://127.0.0.1:3338",  # never contacted: the key is operator-issued
        "UPSTREAM_BASE_URL": f"http://{HOST}:{upstream_port}/v1",
        "BTC_USD_PRICE": "100000",
        "RELAYS": "ws://127.0.0.1:1",
        "LOG_LEVEL": "WARNING",
        "HOST": HOST,
        "PORT": str(port),
        "WORKERS": "1",
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),  # noqa: TID251
    }


def create_key(env: dict[str, str]) -> str:
    """`routstr keys create` with the node's own environment (it migrates the database first)."""
    done = subprocess.run(  # noqa: S603 - our own console script
        [str(BIN / "routstr"), "keys", "create", "--balance-sat", str(KEY_BALANCE_SAT)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if done.returncode != 0:
        msg = f"routstr keys create failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
        raise RuntimeError(msg)
    return done.stdout.strip()


def wait_model(port: int, seconds: float = 30) -> None:
    """The node lists the upstream's model once its catalog has loaded."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data = httpx.get(f"http://{HOST}:{port}/v1/models", timeout=2).json().get("data", [])
            if any(m.get("id") == MODEL_ID for m in data):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    msg = f"the node never listed {MODEL_ID}"
    raise RuntimeError(msg)


def balance(port: int, key: str) -> dict[str, Any]:
    response = httpx.get(f"http://{HOST}:{port}/v1/balance/info", headers={"authorization": f"Bearer {key}"})
    response.raise_for_status()
    info: dict[str, Any] = response.json()
    return info


def chat_body(*, stream: bool, hold_ms: int = 0) -> bytes:
    body: dict[str, Any] = {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": "Say hello to the benchmark in a few words."}],
        "max_tokens": 16,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if hold_ms:
        body["bench"] = {"hold_ms": hold_ms}
    return json.dumps(body, separators=(",", ":")).encode()


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (`q` in 0..1)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Row:
    target: str  # direct | node (SQLite) | node-pg (PostgreSQL)
    mode: str  # json | stream
    concurrency: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    charged_msat: int
    cpu_us_per_req: float | None  # CPU of the server process (node or upstream) per request, all threads


def summarize(
    name: str, mode: str, concurrency: int, result: RunResult, *, billed: bool, cpu: float | None
) -> tuple[Row, int]:
    good = [s for s in result.samples if s.status == 200 and s.complete and (s.cost_msat is not None or not billed)]
    errors = len(result.samples) - len(good) + result.transport_errors
    latencies = [s.latency * 1000 for s in good]
    ttfts = [s.ttft * 1000 for s in good if s.ttft is not None]
    row = Row(
        target=name,
        mode=mode,
        concurrency=concurrency,
        requests=len(result.samples),
        errors=errors,
        rps=len(good) / result.elapsed if result.elapsed else 0.0,
        p50_ms=pct(latencies, 0.50),
        p99_ms=pct(latencies, 0.99),
        ttft_p50_ms=pct(ttfts, 0.50) if ttfts else None,
        ttft_p99_ms=pct(ttfts, 0.99) if ttfts else None,
        charged_msat=sum(s.cost_msat or 0 for s in good) if billed else 0,
        cpu_us_per_req=None if cpu is None or not result.samples else cpu / len(result.samples) * 1e6,
    )
    return row, len(good)


@dataclass
class Server:
    name: str
    port: int
    pid: int
    authorization: str | None  # set for the node: requests are billed


async def measure(server: Server, *, mode: str, concurrency: int, seconds: float, max_requests: int) -> tuple[Row, int]:
    target = Target(HOST, server.port, CHAT_PATH, chat_body(stream=mode == "stream"), server.authorization)
    cpu_before = cpu_seconds(server.pid)
    result = await run_load(target, concurrency=concurrency, seconds=seconds, max_requests=max_requests)
    cpu = cpu_seconds(server.pid) - cpu_before
    return summarize(server.name, mode, concurrency, result, billed=server.authorization is not None, cpu=cpu)


async def warm(server: Server, seconds: float) -> int:
    """Exercise both modes; returns the billed successes (they move the balance too)."""
    good = 0
    for mode in ("json", "stream"):
        target = Target(HOST, server.port, CHAT_PATH, chat_body(stream=mode == "stream"), server.authorization)
        result = await run_load(target, concurrency=16, seconds=seconds, max_requests=100_000)
        good += sum(1 for s in result.samples if s.status == 200 and s.complete)
    return good


def release_streams(upstream_port: int) -> None:
    httpx.get(f"http://{HOST}:{upstream_port}/bench/release", timeout=10).raise_for_status()


async def rss_probe(node: Server, upstream_port: int, count: int, hold_ms: int) -> dict[str, Any]:
    """Node RSS delta while `count` slow streams are open through it (each has received its first event and the
    upstream holds the rest until released), divided by `count`."""
    target = Target(HOST, node.port, CHAT_PATH, chat_body(stream=True, hold_ms=hold_ms), node.authorization)
    warmup = await open_streams(target, 16, first_event_seconds=60)  # touch the slow-stream code paths once
    release_streams(upstream_port)
    await asyncio.gather(*warmup.finishers, return_exceptions=True)
    for writer in warmup.writers:
        writer.close()
    await asyncio.sleep(0.5)
    before = rss_kb(node.pid)
    started = time.perf_counter()
    opened = await open_streams(target, count, first_event_seconds=hold_ms / 1000)
    open_seconds = time.perf_counter() - started
    await asyncio.sleep(0.5)
    during = rss_kb(node.pid)
    release_streams(upstream_port)
    finished = await asyncio.gather(*opened.finishers, return_exceptions=True)
    for writer in opened.writers:
        writer.close()
    ok = [s for s in finished if not isinstance(s, BaseException) and s.status == 200 and s.complete]
    return {
        "streams": count,
        "open_failed": opened.failed,
        "seconds_to_open_all": round(open_seconds, 2),
        "completed_ok": len(ok),
        "rss_before_kb": before,
        "rss_open_kb": during,
        "rss_after_kb": rss_kb(node.pid),
        "rss_per_stream_kb": (during - before) / count,
    }


def table(rows: list[Row]) -> list[str]:
    header = (
        f"{'target':<8} {'mode':<6} {'c':>3} {'reqs':>6} {'err':>4} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'ttft50':>7} {'ttft99':>7} {'cpu us/req':>10}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        ttft50 = f"{r.ttft_p50_ms:7.2f}" if r.ttft_p50_ms is not None else f"{'-':>7}"
        ttft99 = f"{r.ttft_p99_ms:7.2f}" if r.ttft_p99_ms is not None else f"{'-':>7}"
        cpu = f"{r.cpu_us_per_req:10.0f}" if r.cpu_us_per_req is not None else f"{'-':>10}"
        lines.append(
            f"{r.target:<8} {r.mode:<6} {r.concurrency:>3} {r.requests:>6} {r.errors:>4} {r.rps:>7.0f} "
            f"{r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {ttft50} {ttft99} {cpu}"
        )
    return lines


def find(rows: list[Row], target: str, mode: str, concurrency: int) -> Row | None:
    return next((r for r in rows if (r.target, r.mode, r.concurrency) == (target, mode, concurrency)), None)


def verdicts(rows: list[Row], rss: dict[str, Any], pg_ratio: float | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, target: float, *, at_least: bool, unit: str) -> None:
        met = None if value is None else (value >= target if at_least else value <= target)
        out.append({"figure": name, "value": value, "target": target, "at_least": at_least, "unit": unit, "met": met})

    node16 = find(rows, "node", "json", 16)
    rps = None if node16 is None else (node16.rps if node16.errors == 0 else 0.0)
    add("billed req/s, json, c=16, 0 errors", rps, TARGETS["billed_rps_c16"], at_least=True, unit="req/s")
    for mode in ("json", "stream"):
        d1, n1 = find(rows, "direct", mode, 1), find(rows, "node", mode, 1)
        d16, n16 = find(rows, "direct", mode, 16), find(rows, "node", mode, 16)
        added50 = n1.p50_ms - d1.p50_ms if n1 and d1 else None
        added99 = n16.p99_ms - d16.p99_ms if n16 and d16 else None
        add(f"added p50 latency, {mode}, c=1", added50, TARGETS["added_p50_ms_c1"], at_least=False, unit="ms")
        add(f"added p99 latency, {mode}, c=16", added99, TARGETS["added_p99_ms_c16"], at_least=False, unit="ms")
    ds, ns = find(rows, "direct", "stream", 1), find(rows, "node", "stream", 1)
    ttft = None
    if ns and ds and ns.ttft_p50_ms is not None and ds.ttft_p50_ms is not None:
        ttft = ns.ttft_p50_ms - ds.ttft_p50_ms
    add("streaming TTFT overhead p50, c=1", ttft, TARGETS["ttft_overhead_ms"], at_least=False, unit="ms")
    per_stream = rss.get("rss_per_stream_kb")
    label = f"RSS per open stream ({rss.get('streams', 0)} open)"
    add(label, per_stream, TARGETS["rss_per_stream_kb"], at_least=False, unit="KB")
    add(
        "PostgreSQL / SQLite, time per billed request",
        pg_ratio,
        TARGETS["postgres_vs_sqlite_ratio"],
        at_least=False,
        unit="x",
    )
    return out


_PG_ADMIN: Final = """
import asyncio, sys
import asyncpg
async def main(action, name):
    conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="postgres")
    try:
        if action == "create":
            await conn.execute(f'CREATE DATABASE "{name}"')
        else:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def postgres_database() -> str | None:
    """A fresh database on the local PostgreSQL, or None when it is not reachable."""
    try:
        with socket.create_connection((HOST, 5432), timeout=0.5):
            pass
    except OSError:
        return None
    name = f"bench_{secrets.token_hex(4)}"
    command = [sys.executable, "-c", _PG_ADMIN, "create", name]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - our interpreter
    return name if done.returncode == 0 else None


def drop_postgres_database(name: str) -> None:
    command = [sys.executable, "-c", _PG_ADMIN, "drop", name]
    subprocess.run(command, capture_output=True, check=False)  # noqa: S603 - our interpreter


def check_billing(
    label: str, before: dict[str, Any], after: dict[str, Any], charged: int, successes: int
) -> dict[str, Any]:
    """The key's balance dropped by exactly what the node reported per request, and nothing stays reserved."""
    dropped = int(before["balance"]) - int(after["balance"])
    requests = int(after["total_requests"]) - int(before["total_requests"])
    spent = int(after["total_spent"]) - int(before["total_spent"])
    ok = dropped == charged == spent and int(after["reserved"]) == 0 and requests == successes
    say(
        f"billing check ({label}): balance dropped {dropped} msat, sum of reported costs {charged} msat, "
        f"total_spent +{spent}, total_requests +{requests} for {successes} successes, reserved {after['reserved']}"
        f" -> {'OK' if ok else 'MISMATCH'}"
    )
    return {
        "balance_drop_msat": dropped,
        "reported_cost_msat": charged,
        "total_spent_delta_msat": spent,
        "total_requests_delta": requests,
        "successes": successes,
        "reserved_after_msat": int(after["reserved"]),
        "ok": ok,
    }


async def sqlite_grid(args: argparse.Namespace, workdir: Path, rows: list[Row], report: dict[str, Any]) -> None:
    upstream_port, node_port = free_port(), free_port()
    upstream_cmd = [sys.executable, "-m", "bench.upstream", "--port", str(upstream_port)]
    env = node_env(f"sqlite+aiosqlite:///{workdir / 'routstr.db'}", upstream_port, node_port)
    with running(
        upstream_cmd,
        dict(os.environ),  # noqa: TID251 - a child process env
        workdir / "upstream.log",
        upstream_port,
    ) as upstream:
        key = create_key(env)
        with running([str(BIN / "routstr"), "serve"], env, workdir / "node.log", node_port) as node_process:
            wait_model(node_port)
            direct = Server("direct", upstream_port, upstream.pid, None)
            node = Server("node", node_port, node_process.pid, f"Bearer {key}")
            say(f"upstream pid {upstream.pid} on :{upstream_port}; node pid {node_process.pid} on :{node_port}")
            await warm(direct, args.warmup)
            await warm(node, args.warmup)
            before = balance(node_port, key)
            say("\n".join(table([])))
            successes = 0
            node_rows: list[Row] = []
            for mode in ("json", "stream"):
                for concurrency in (1, 16):
                    for server in (direct, node):  # each cell back to back, so both see the same machine load
                        row, good = await measure(
                            server,
                            mode=mode,
                            concurrency=concurrency,
                            seconds=args.seconds,
                            max_requests=args.max_requests,
                        )
                        rows.append(row)
                        if server is node:
                            successes += good
                            node_rows.append(row)
                        say(table([row])[-1])
            after = balance(node_port, key)
            charged = sum(r.charged_msat for r in node_rows)
            report["billing_sqlite"] = check_billing("sqlite", before, after, charged, successes)
            if args.streams:
                rss = await rss_probe(node, upstream_port, args.streams, args.hold_ms)
                say(
                    f"RSS probe: {rss['streams']} open streams, node RSS {rss['rss_before_kb']} -> "
                    f"{rss['rss_open_kb']} KB ({rss['rss_per_stream_kb']:.1f} KB/stream); "
                    f"opened in {rss['seconds_to_open_all']} s; "
                    f"{rss['completed_ok']} completed, {rss['open_failed']} failed"
                )
                report["rss"] = rss
        if args.postgres:
            report["postgres_ratio"] = await postgres_grid(args, workdir, upstream_port, rows, report)


async def postgres_grid(
    args: argparse.Namespace, workdir: Path, upstream_port: int, rows: list[Row], report: dict[str, Any]
) -> float | None:
    """The node on a fresh PostgreSQL database, c=16 json and stream; returns SQLite req/s ÷ PostgreSQL req/s."""
    name = postgres_database()
    if name is None:
        say("PostgreSQL not reachable: skipped")
        return None
    try:
        port = free_port()
        env = node_env(f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", upstream_port, port)
        key = create_key(env)
        with running([str(BIN / "routstr"), "serve"], env, workdir / "node-pg.log", port) as process:
            wait_model(port)
            node = Server("node-pg", port, process.pid, f"Bearer {key}")
            await warm(node, args.warmup)
            before = balance(port, key)
            successes = 0
            pg_rows: list[Row] = []
            for mode in ("json", "stream"):
                row, good = await measure(
                    node, mode=mode, concurrency=16, seconds=args.seconds, max_requests=args.max_requests
                )
                pg_rows.append(row)
                successes += good
                say(table([row])[-1])
            after = balance(port, key)
            charged = sum(r.charged_msat for r in pg_rows)
            report["billing_postgres"] = check_billing("postgres", before, after, charged, successes)
            rows.extend(pg_rows)
    finally:
        drop_postgres_database(name)
    sqlite, pg = find(rows, "node", "json", 16), find(rows, "node-pg", "json", 16)
    if sqlite is None or pg is None or not pg.rps:
        return None
    return sqlite.rps / pg.rps


async def main_async(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="routstr-bench-"))
    rows: list[Row] = []
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
        "settings": dict(vars(args)),
    }
    try:
        await sqlite_grid(args, workdir, rows, report)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["rows"] = [asdict(r) for r in rows]
    report["targets"] = verdicts(rows, report.get("rss") or {}, report.get("postgres_ratio"))
    say()
    say("\n".join(table(rows)))
    say()
    for verdict in report["targets"]:
        value = verdict["value"]
        shown = "n/a" if value is None else f"{value:.2f}"
        mark = {True: "met", False: "MISSED", None: "not measured"}[verdict["met"]]
        bound = ">=" if verdict["at_least"] else "<="
        say(f"{verdict['figure']:<46} {shown:>9} {verdict['unit']:<5} target {bound} {verdict['target']:g}  {mark}")
    load = report["machine"]
    say(f"load average (1/5/15 min) at start {load['loadavg_start']}, at end {load['loadavg_end']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    say(f"wrote {RESULTS.relative_to(ROOT)}")
    billing_ok = all(report[k]["ok"] for k in ("billing_sqlite", "billing_postgres") if k in report)
    return 0 if billing_ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description="routstr proxy benchmark (direct vs through the node)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each measured cell")
    parser.add_argument("--max-requests", type=int, default=50_000, help="cap per measured cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per server and mode")
    parser.add_argument("--streams", type=int, default=200, help="slow streams held open for the RSS probe (0: skip)")
    parser.add_argument("--hold-ms", type=int, default=60000, help="longest the upstream holds a slow stream")
    parser.add_argument("--no-postgres", dest="postgres", action="store_false", help="skip the PostgreSQL cells")
    args = parser.parse_args()
    try:
        import uvloop  # noqa: PLC0415 - optional; makes the load generator cheaper
    except ImportError:  # pragma: no cover
        return asyncio.run(main_async(args))
    return uvloop.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
