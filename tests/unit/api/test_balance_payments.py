"""Balance routes (create, top-up, refund) on fakes: wire shapes, SPEC §15 envelopes, and bad input changing nothing."""

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.adapters.cashu.codec import CashuTokenCodec
from app.domain.wallet import token_api_key
from app.infrastructure.app import create_app
from app.infrastructure.container import Adapters
from app.infrastructure.settings import load_settings
from tests.fakes.clock import FixedClock
from tests.fakes.ledger import InMemoryLedger, InMemoryLedgerAudit
from tests.fakes.mint import FakeMint
from tests.fakes.storage import FakeStorageHealth
from tests.fakes.wallet import InMemoryRedemptions, InMemoryWallet, ProofStore

MINT = "http://mint.test"
CODEC = CashuTokenCodec()


@dataclass
class PayNode:
    client: AsyncTestClient[Any]
    ledger: InMemoryLedger
    mint: FakeMint
    wallet: InMemoryWallet

    def token(self, amount: int, mint: str = MINT) -> str:
        return CODEC.encode_token(self.mint.issue(mint, amount))


@pytest.fixture
async def pay() -> AsyncIterator[PayNode]:
    settings = load_settings({"CASHU_MINTS": MINT, "BTC_USD_PRICE": "100000", "RELAYS": "ws://127.0.0.1:1"})
    clock = FixedClock()
    ledger = InMemoryLedger()
    proofs = ProofStore()
    wallet = InMemoryWallet(ledger, proofs)
    mint = FakeMint({MINT: 0, "http://other.test": 0})
    adapters = Adapters(
        clock=clock,
        ledger=ledger,
        audit=InMemoryLedgerAudit(ledger),
        storage_health=FakeStorageHealth(),
        mint=mint,
        wallet=wallet,
        redemptions=InMemoryRedemptions(ledger, proofs),
    )
    async with AsyncTestClient(app=create_app(settings, adapters)) as client:
        yield PayNode(client, ledger, mint, wallet)


def _bearer(credential: str) -> dict[str, str]:
    return {"authorization": f"Bearer {credential}"}


async def test_post_create_returns_api_key_and_balance_in_msat(pay: PayNode) -> None:
    token = pay.token(7)

    response = await pay.client.post("/v1/balance/create", json={"initial_balance_token": token})

    assert response.status_code == 200
    assert response.json() == {"api_key": token_api_key(token), "balance": 7_000}


async def test_post_create_applies_limit_and_validity_to_the_new_key(pay: PayNode) -> None:
    token = pay.token(7)
    body = {
        "cashu_token": token,
        "balance_limit": 3_000,
        "balance_limit_reset": "daily",
        "validity_date": 1_900_000_000,
    }

    response = await pay.client.post("/v1/balance/create", json=body)
    info = await pay.client.get("/v1/balance/info", headers=_bearer(response.json()["api_key"]))

    assert info.json()["balance_limit"] == 3_000
    assert info.json()["balance_limit_reset"] == "daily"
    assert info.json()["validity_date"] == 1_900_000_000


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b'{"cashu_token": 5}', 400, "invalid_request"),
        (b'{"cashu_token": "x", "balance_limit": -1}', 400, "invalid_request"),
        (b'{"cashu_token": "x", "balance_limit_reset": "hourly"}', 400, "invalid_request"),
        (b"{}", 400, "invalid_request"),
        (b'{"cashu_token": "cashuBnotatoken"}', 400, "invalid_cashu_token"),
    ],
)
async def test_post_create_refuses_bad_input_with_envelope_and_changes_nothing(
    pay: PayNode, body: bytes, status: int, code: str
) -> None:
    response = await pay.client.post("/v1/balance/create", content=body, headers={"content-type": "application/json"})

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["request_id"]
    assert pay.ledger.entries == []
    assert pay.mint.calls == []


async def test_create_from_untrusted_mint_names_the_accepted_mints(pay: PayNode) -> None:
    response = await pay.client.get(
        "/v1/balance/create", params={"initial_balance_token": pay.token(2, "http://other.test")}
    )

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_token"
    assert MINT in response.json()["error"]["message"]
    assert response.json()["error"]["details"] == {"accepted_mints": [MINT]}
    assert pay.mint.calls == []


async def test_topup_returns_msats_and_requires_a_key(pay: PayNode) -> None:
    created = (await pay.client.post("/v1/balance/create", json={"cashu_token": pay.token(4)})).json()

    topped = await pay.client.post(
        "/v1/wallet/topup", json={"cashu_token": pay.token(2)}, headers=_bearer(created["api_key"])
    )
    anonymous = await pay.client.post("/v1/balance/topup", json={"cashu_token": pay.token(2)})

    assert topped.json() == {"msats": 2_000}
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "missing_api_key"


async def test_refund_returns_token_and_sats_as_string(pay: PayNode) -> None:
    created = (await pay.client.post("/v1/balance/create", json={"cashu_token": pay.token(6)})).json()

    response = await pay.client.post("/v1/balance/refund", headers=_bearer(created["api_key"]))

    assert response.status_code == 200
    assert set(response.json()) == {"token", "sats"}
    assert response.json()["sats"] == "6"
    assert CODEC.decode_token(response.json()["token"]).amount == 6


async def test_refund_conflict_is_409_with_retry_after(pay: PayNode) -> None:
    created = (await pay.client.post("/v1/balance/create", json={"cashu_token": pay.token(6)})).json()
    (key_hash,) = pay.ledger.keys
    pay.ledger.keys[key_hash] = dataclasses.replace(
        pay.ledger.keys[key_hash], reserved=pay.ledger.keys[key_hash].balance
    )

    response = await pay.client.post("/v1/balance/refund", headers=_bearer(created["api_key"]))

    assert response.status_code == 409
    assert response.headers["retry-after"] == "2"
    assert response.json()["error"] | {"message": ""} == {
        "message": "",
        "type": "refund_error",
        "code": "refund_conflict",
    }


async def test_wallet_aliases_are_hidden_from_the_schema(pay: PayNode) -> None:
    schema = (await pay.client.get("/schema/openapi.json")).json()

    assert "/v1/balance/create" in schema["paths"]
    assert "/v1/balance/refund" in schema["paths"]
    assert not [p for p in schema["paths"] if p.startswith("/v1/wallet")]
