"""`make demo`: a local mint, an echo upstream and the node on SQLite, walked through the node's main job."""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai

from scripts.demo_xcashu import x_cashu_story
from tests.support.backends import free_port
from tests.support.echo_upstream import EchoUpstream
from tests.support.mint import RunningMint, start_mint
from tests.support.nutshell import NutshellWallet

ROOT = Path(__file__).resolve().parents[1]
WORKDIR = ROOT / ".demo"
ROUTSTR = ROOT / ".venv" / "bin" / "routstr"


def say(line: str = "") -> None:
    print(line, flush=True)


def step(title: str) -> None:
    say()
    say(f"== {title}")


def sats(msat: int) -> str:
    return f"{msat} msat ({msat / 1000:g} sat)"


class Node:
    """`routstr serve` as a subprocess, exactly as an operator runs it."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.port = int(env["PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - our own console script
            [str(ROUTSTR), "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=WORKDIR
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("node exited:\n" + self.log_path.read_text(errors="replace")[-3000:])
            try:
                httpx.get(f"{self.url}/", timeout=1)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            return
        msg = "node did not start"
        raise RuntimeError(msg)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def cli(self, *args: str) -> str:
        result = subprocess.run(  # noqa: S603 - our own console script
            [str(ROUTSTR), *args], env=self.env, capture_output=True, text=True, check=True, cwd=WORKDIR
        )
        return result.stdout.strip()


@contextmanager
def running_mint() -> Iterator[RunningMint]:
    mint = start_mint()
    try:
        yield mint
    finally:
        mint.stop()


def show_json(label: str, response: httpx.Response, keys: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    shown = {k: body[k] for k in keys if k in body} if keys else body
    say(f"{label} -> {response.status_code} {json.dumps(shown)}")
    return body


def cost_headers(headers: httpx.Headers) -> str:
    names = ["x-routstr-cost-msats", "x-routstr-input-cost-msats", "x-routstr-output-cost-msats", "x-routstr-cost-usd"]
    return ", ".join(f"{n}={headers.get(n)}" for n in names)


def prepaid_key_story(node: Node, http: httpx.Client, model: str) -> None:
    step("Operator issues a prepaid key: routstr keys create --balance-sat 1000")
    key = node.cli("keys", "create", "--balance-sat", "1000")
    say(f"key: {key[:11]}… (shown once; only its sha256 is stored)")
    auth = {"Authorization": f"Bearer {key}"}
    info = show_json("GET /v1/balance/info", http.get("/v1/balance/info", headers=auth), ["balance", "reserved"])
    start_balance = int(info["balance"])

    step("A chat completion through the official openai client, billed from the key")
    client = openai.OpenAI(base_url=f"{node.url}/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "Hello from the routstr demo"}], max_tokens=64
    )
    completion = raw.parse()
    say(f"reply: {completion.choices[0].message.content!r}")
    say(f"headers: {cost_headers(raw.http_response.headers)}")
    usage = completion.usage.model_dump() if completion.usage else {}
    say(f"usage.cost: {json.dumps(usage.get('cost'))}, usage.cost_sats: {usage.get('cost_sats')}")

    step("A streamed chat completion: chunks arrive as the upstream sends them; the cost comes last")
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Stream a few words please"}], stream=True
    )
    pieces: list[str] = []
    final_cost: Any = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            final_cost = chunk.usage.model_dump().get("cost")
    say(f"streamed {len(pieces)} chunks: {''.join(pieces)!r}")
    say(f"cost chunk: {json.dumps(final_cost)}")

    info = show_json("GET /v1/balance/info", http.get("/v1/balance/info", headers=auth), ["balance", "total_spent"])
    say(f"spent {sats(start_balance - int(info['balance']))} over two requests")


def token_as_key_story(node: Node, http: httpx.Client, mint: RunningMint, model: str) -> None:
    step("A user mints eCash at the local mint (nutshell wallet, FakeWallet Lightning)")
    wallet = NutshellWallet(mint.url, WORKDIR / "user-wallet")
    say(f"user wallet balance: {asyncio.run(wallet.mint(2000))} sat")
    sent = asyncio.run(wallet.send(500))
    token = sent.token
    say(f"token worth {sent.amount} sat: {token[:12]}… (a bearer instrument: the demo never prints it whole)")

    step("The token itself is the API key: chat through the official openai client")
    client = openai.OpenAI(base_url=f"{node.url}/v1", api_key=token, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "Paying with eCash"}], max_tokens=32
    )
    completion = raw.parse()
    say(f"reply: {completion.choices[0].message.content!r}")
    say(f"headers: {cost_headers(raw.http_response.headers)}")
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "and a streamed answer"}], stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    say(f"streamed: {streamed!r}")
    auth = {"Authorization": f"Bearer {token}"}
    info = show_json("GET /v1/balance/info", http.get("/v1/balance/info", headers=auth), ["balance", "total_spent"])
    say(f"deposited {sats(sent.amount * 1000)}, spent {sats(int(info['total_spent']))}")

    step("Refund the rest as a Cashu token, and a nutshell wallet receives it")
    refund = http.post("/v1/balance/refund", headers=auth)
    body = refund.json()
    say(f"POST /v1/balance/refund -> {refund.status_code} sats={body.get('sats')} (sub-sat remainder kept as rounding)")
    received = asyncio.run(NutshellWallet(mint.url, WORKDIR / "refund-wallet").receive(body["token"]))
    say(f"refund wallet received {received} sat")


def main() -> int:
    shutil.rmtree(WORKDIR, ignore_errors=True)
    WORKDIR.mkdir(parents=True)
    step("Starting a local FakeWallet Cashu mint (nutshell, .venv-mint)")
    with running_mint() as mint, EchoUpstream() as upstream:
        say(f"mint: {mint.url}")
        say(f"echo upstream: {upstream.base_url}")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DATABASE_URL": f"sqlite+aiosqlite:///{WORKDIR / 'routstr.db'}",
            "CASHU_MINTS": mint.url,
            "UPSTREAM_BASE_URL": upstream.base_url,
            "BTC_USD_PRICE": "100000",
            "RELAYS": "ws://127.0.0.1:1",
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "NAME": "DemoNode",
            "LOG_LEVEL": "WARNING",
        }
        node = Node(env, WORKDIR / "node.log")
        step("Starting the node: routstr serve (migrates SQLite, then serves)")
        node.start()
        try:
            with httpx.Client(base_url=node.url, timeout=30) as http:
                say(f"node: {node.url}")
                show_json("GET /health", http.get("/health"))
                show_json("GET /v1/info", http.get("/v1/info"), ["name", "version", "mints", "unit", "fees", "nuts"])
                models = http.get("/v1/models").json()["data"]
                for model in models:
                    say(f"model {model['id']}: max_cost {model['sats_pricing']['max_cost']} sat")
                prepaid_key_story(node, http, models[0]["id"])
                token_as_key_story(node, http, mint, models[0]["id"])
                x_cashu_story(
                    node_url=node.url, mint_url=mint.url, model=models[0]["id"], workdir=WORKDIR, say=say, step=step
                )
                step("Ledger audit: routstr audit")
                say(node.cli("audit"))
        finally:
            step("Stopping the node, the upstream and the mint")
            node.stop()
    say("demo finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
