"""Paid routes and the refund route with X-Cashu on fakes: NUT-24 402 wire shape, change headers, refund_token."""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.adapters.cashu.codec import CashuTokenCodec
from app.infrastructure.app import create_app
from app.infrastructure.container import Adapters
from app.infrastructure.settings import load_settings
from tests.fakes.clock import FixedClock
from tests.fakes.ledger import InMemoryLedger, InMemoryLedgerAudit
from tests.fakes.mint import FakeMint
from tests.fakes.storage import FakeStorageHealth
from tests.fakes.upstream import FakeUpstream, ScriptedReply
from tests.fakes.wallet import InMemoryRedemptions, InMemoryWallet, ProofStore

MINT = "http://mint.test"
SECOND = "http://second.test"
CODEC = CashuTokenCodec()
MODEL = {
    "id": "vendor/model-a",
    "name": "Model A",
    "context_length": 8192,
    "pricing": {"prompt": "0.000001", "completion": "0.000002", "request": "0", "image": "0"},
    "top_provider": {"context_length": 8192, "max_completion_tokens": 512},
}
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
CHAT = {"model": "vendor/model-a", "messages": [{"role": "user", "content": "hello"}]}


@dataclass
class PaidNode:
    client: AsyncTestClient[Any]
    mint: FakeMint
    upstream: FakeUpstream

    def token(self, amount: int) -> str:
        return CODEC.encode_token(self.mint.issue(MINT, amount))


@pytest.fixture
async def paid() -> AsyncIterator[PaidNode]:
    settings = load_settings(
        {
            "CASHU_MINTS": f"{MINT},{SECOND}",
            "UPSTREAM_BASE_URL": "http://upstream.test/v1",
            "BTC_USD_PRICE": "100000",
            "MODELS_REFRESH_INTERVAL_SECONDS": "0",
            "RELAYS": "ws://127.0.0.1:1",
        }
    )
    clock = FixedClock()
    ledger = InMemoryLedger()
    proofs = ProofStore()
    mint = FakeMint({MINT: 0, SECOND: 0})
    reply = ScriptedReply(chunks=[json.dumps({"id": "x", "choices": [], "usage": USAGE}).encode()])
    upstream = FakeUpstream("default", models=[MODEL], replies=[reply])
    adapters = Adapters(
        clock=clock,
        ledger=ledger,
        audit=InMemoryLedgerAudit(ledger),
        storage_health=FakeStorageHealth(),
        upstreams={"default": upstream},
        mint=mint,
        wallet=InMemoryWallet(ledger, proofs),
        redemptions=InMemoryRedemptions(ledger, proofs),
    )
    async with AsyncTestClient(app=create_app(settings, adapters)) as client:
        yield PaidNode(client, mint, upstream)


async def test_post_chat_without_credential_returns_402_envelope_with_creq(paid: PaidNode) -> None:
    response = await paid.client.post("/v1/chat/completions", json=CHAT)

    assert response.status_code == 402
    body = response.json()
    assert set(body) == {"error", "request_id"}
    assert (body["error"]["type"], body["error"]["code"]) == ("insufficient_quota", "payment_required")
    details = body["error"]["details"]
    assert set(details) == {"required_msat", "available_msat", "model"}
    assert (details["available_msat"], details["model"]) == (0, "vendor/model-a")
    creq = CODEC.decode_payment_request(response.headers["x-cashu"])
    assert (creq.amount, creq.unit, creq.mints, creq.single_use) == (
        -(-details["required_msat"] // 1000),
        "sat",
        (MINT, SECOND),
        True,
    )
    assert "refund_token" not in body["error"]


async def test_post_chat_with_x_cashu_returns_change_in_x_cashu_header(paid: PaidNode) -> None:
    response = await paid.client.post("/v1/chat/completions", json=CHAT, headers={"X-Cashu": paid.token(64)})

    assert response.status_code == 200
    change = CODEC.decode_token(response.headers["x-cashu"])
    assert change.amount + response.json()["usage"]["cost_sats"] == 64
    assert "x-routstr-change-pending" not in response.headers


async def test_post_chat_with_x_cashu_returns_refund_token_when_upstream_fails(paid: PaidNode) -> None:
    paid.upstream.replies = [ScriptedReply(status=500, chunks=[b"{}"])]

    response = await paid.client.post("/v1/chat/completions", json=CHAT, headers={"X-Cashu": paid.token(64)})

    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_error"
    assert error["refund_token"] == response.headers["x-cashu"]
    assert CODEC.decode_token(error["refund_token"]).amount == 64


async def test_post_refund_with_unknown_x_cashu_returns_404_without_api_key(paid: PaidNode) -> None:
    response = await paid.client.post("/v1/balance/refund", headers={"X-Cashu": paid.token(8)})

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "token_not_found"
    assert response.json()["error"]["type"] == "refund_error"


async def test_post_refund_with_x_cashu_returns_token_in_body_and_header(paid: PaidNode) -> None:
    token = paid.token(64)
    created = await paid.client.post("/v1/balance/create", json={"cashu_token": token})

    response = await paid.client.post("/v1/wallet/refund", headers={"X-Cashu": token})

    assert created.status_code == 200
    assert response.status_code == 200
    assert response.json()["sats"] == "64"
    assert response.headers["x-cashu"] == response.json()["token"]
