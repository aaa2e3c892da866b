"""Cashu benchmark: the local mint's raw swap rate, token redemptions (`/v1/balance/create`) and X-Cashu requests
per second through the node (redeem + proxy + settle + change), on SQLite. Not a test; prints a table.

    .venv/bin/python -m bench.cashu_bench [--tokens 120] [--concurrency 1,4]

Tokens are minted straight from the FakeWallet mint with the node's own Cashu adapter (one quote, one mint call,
one token per output set), so no nutshell wallet call sits in the measured loop.
"""

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.adapters.cashu.codec import CashuTokenCodec
from app.adapters.cashu.mint import HttpCashuMint
from app.adapters.sql import migrate
from app.domain.cashu import PendingOutput, Proof, QuoteState, Token
from app.infrastructure.logging import configure_logging
from tests.support.echo_upstream import EchoUpstream
from tests.support.mint import RunningMint, start_mint
from tests.support.node import ServedNode, node_settings

CODEC = CashuTokenCodec()
TOKEN_SATS = 64
CHAT = {"model": "echo/echo-1", "messages": [{"role": "user", "content": "bench"}], "max_tokens": 8}


@dataclass(frozen=True)
class Row:
    what: str
    concurrency: int
    count: int
    seconds: float
    failures: int

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


async def mint_proof_sets(mint: HttpCashuMint, url: str, count: int) -> list[list[Proof]]:
    """`count` independent proof sets worth TOKEN_SATS each, from one paid FakeWallet quote."""
    quote = await mint.create_mint_quote(url, "sat", count * TOKEN_SATS)
    for _ in range(50):  # FakeWallet marks the invoice paid almost at once
        if (await mint.get_mint_quote(url, quote.quote_id)).state is QuoteState.PAID:
            break
        await asyncio.sleep(0.1)
    sets: list[Sequence[PendingOutput]] = [await mint.prepare_outputs(url, "sat", TOKEN_SATS) for _ in range(count)]
    proofs = await mint.mint(url, quote.quote_id, [o for outputs in sets for o in outputs])
    grouped: list[list[Proof]] = []
    start = 0
    for outputs in sets:
        grouped.append(list(proofs[start : start + len(outputs)]))
        start += len(outputs)
    return grouped


async def run_pool(concurrency: int, jobs: list[Callable[[], Awaitable[bool]]]) -> tuple[float, int]:
    """Run the jobs with `concurrency` workers; returns (seconds, failures)."""
    queue = list(reversed(jobs))
    failures = 0

    async def worker() -> None:
        nonlocal failures
        while queue:
            job = queue.pop()
            if not await job():
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, failures


async def bench(mint_url: str, node_url: str, tokens: int, concurrencies: list[int]) -> list[Row]:
    rows: list[Row] = []
    async with httpx.AsyncClient(timeout=60) as client, httpx.AsyncClient(base_url=node_url, timeout=60) as http:
        mint = HttpCashuMint(client, max_concurrency=0)
        for concurrency in concurrencies:
            sets = await mint_proof_sets(mint, mint_url, tokens)

            def swap(proofs: list[Proof]) -> Callable[[], Awaitable[bool]]:
                async def job() -> bool:
                    outputs = await mint.prepare_outputs(mint_url, "sat", TOKEN_SATS)
                    await mint.swap(mint_url, proofs, outputs)
                    return True

                return job

            seconds, failed = await run_pool(concurrency, [swap(p) for p in sets])
            rows.append(Row("mint raw swap", concurrency, tokens, seconds, failed))

            sets = await mint_proof_sets(mint, mint_url, tokens)
            encoded = [CODEC.encode_token(Token(mint=mint_url, unit="sat", proofs=tuple(p))) for p in sets]

            def create(token: str) -> Callable[[], Awaitable[bool]]:
                async def job() -> bool:
                    return (await http.post("/v1/balance/create", json={"cashu_token": token})).status_code == 200

                return job

            seconds, failed = await run_pool(concurrency, [create(t) for t in encoded])
            rows.append(Row("redemption (/v1/balance/create)", concurrency, tokens, seconds, failed))

            sets = await mint_proof_sets(mint, mint_url, tokens)
            encoded = [CODEC.encode_token(Token(mint=mint_url, unit="sat", proofs=tuple(p))) for p in sets]

            def paid(token: str) -> Callable[[], Awaitable[bool]]:
                async def job() -> bool:
                    response = await http.post("/v1/chat/completions", json=CHAT, headers={"X-Cashu": token})
                    return response.status_code == 200 and "x-cashu" in response.headers

                return job

            seconds, failed = await run_pool(concurrency, [paid(t) for t in encoded])
            rows.append(Row("X-Cashu request (redeem+proxy+change)", concurrency, tokens, seconds, failed))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=120)
    parser.add_argument("--concurrency", default="1,4")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    configure_logging("WARNING")  # the node runs in this process: keep its request log out of the table
    mint: RunningMint = start_mint()
    try:
        with EchoUpstream() as echo, tempfile.TemporaryDirectory(prefix="routstr-cashu-bench-") as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'routstr.db'}"
            asyncio.run(migrate(url))
            settings = node_settings(url, echo.base_url, CASHU_MINTS=mint.url, LOG_LEVEL="WARNING")
            with ServedNode(settings) as node:
                rows = asyncio.run(bench(mint.url, node.url, args.tokens, concurrencies))
    finally:
        mint.stop()
    print(f"{'what':40} {'c':>3} {'n':>5} {'per s':>8} {'failed':>6}")
    for row in rows:
        print(f"{row.what:40} {row.concurrency:>3} {row.count:>5} {row.rate:>8.1f} {row.failures:>6}")
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    payload = [{**row.__dict__, "per_second": round(row.rate, 1)} for row in rows]
    (results / "cashu_bench.json").write_text(json.dumps(payload, indent=2))
    return 1 if any(row.failures for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
