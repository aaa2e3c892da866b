"""`make demo`, X-Cashu part: pay one request in a header and get the change back; pay a NUT-24 402 (creqA)."""

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import openai

from app.adapters.cashu.codec import CashuTokenCodec
from tests.support.nutshell import NutshellWallet

CODEC = CashuTokenCodec()


def x_cashu_story(
    *,
    node_url: str,
    mint_url: str,
    model: str,
    workdir: Path,
    say: Callable[[str], None],
    step: Callable[[str], None],
) -> None:
    """Three steps: X-Cashu with the change in the response header (official openai client), a streamed X-Cashu
    request with the change event, and a 402 whose creq is paid. Each change is received by a nutshell wallet."""
    wallet = NutshellWallet(mint_url, workdir / "x-cashu-wallet")
    receiver = NutshellWallet(mint_url, workdir / "change-wallet")
    say(f"x-cashu wallet balance: {asyncio.run(wallet.mint(1000))} sat")

    step("Pay one request with X-Cashu: the token rides in a header, the change comes back in X-Cashu")
    sent = asyncio.run(wallet.send(100))
    client = openai.OpenAI(
        base_url=f"{node_url}/v1", api_key="unused", default_headers={"X-Cashu": sent.token}, max_retries=0
    )
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "pay per request"}], max_tokens=32
    )
    client.close()
    usage = raw.parse().usage
    cost_sats = (usage.model_extra or {}).get("cost_sats") if usage is not None else None
    change_token = raw.http_response.headers["x-cashu"]
    change = CODEC.decode_token(change_token).amount
    say(f"paid with {sent.amount} sat: cost {cost_sats} sat, change {change} sat (cost + change = {sent.amount})")
    say(f"change wallet received {asyncio.run(receiver.receive(change_token))} sat")

    step("A streamed X-Cashu request: the routstr.change event arrives just before [DONE]")
    sent = asyncio.run(wallet.send(100))
    with httpx.Client(base_url=node_url, timeout=30) as http:
        body = {"model": model, "messages": [{"role": "user", "content": "stream it"}], "stream": True}
        streamed = http.post("/v1/chat/completions", json=body, headers={"X-Cashu": sent.token})
        events = [line[6:] for line in streamed.text.split("\n") if line.startswith("data: ")]
        event = json.loads(events[-2])
        say(f"last events: {event['object']} (amount {event['amount']} {event['unit']}), then {events[-1]}")
        say(f"change wallet received {asyncio.run(receiver.receive(event['x_cashu']))} sat")
        refund = http.post("/v1/balance/refund", headers={"X-Cashu": sent.token})
        say(f"POST /v1/balance/refund with X-Cashu -> {refund.status_code}: the same change again (lost replies)")

        step("No credential: 402 with a NUT-24 payment request in X-Cashu; the client pays it")
        ask = {"model": model, "messages": [{"role": "user", "content": "what does it cost?"}], "max_tokens": 64}
        demand = http.post("/v1/chat/completions", json=ask)
        request = CODEC.decode_payment_request(demand.headers["x-cashu"])
        details = demand.json()["error"]["details"]
        say(f"{demand.status_code} {demand.json()['error']['code']}: required {details['required_msat']} msat")
        say(f"creq: a={request.amount} u={request.unit} m={list(request.mints)} s={request.single_use}")
        amount = request.amount or 1
        sent = asyncio.run(wallet.send(amount))
        paid = http.post("/v1/chat/completions", json=ask, headers={"X-Cashu": sent.token})
        change = CODEC.decode_token(paid.headers["x-cashu"]).amount if "x-cashu" in paid.headers else 0
        say(f"paid the creq with {sent.amount} sat -> {paid.status_code}, change {change} sat")
