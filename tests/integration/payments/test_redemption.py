"""Token as key, create, top-up and the redemption refusals against real nutshell mints (SPEC §18: 1, 6, 8, 21)."""

from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient

from app.domain.cashu import ProofStateKind
from app.domain.wallet import token_api_key
from app.infrastructure.app import create_app
from tests.integration.payments.conftest import (
    CODEC,
    RecordingServer,
    TableCounts,
    new_token,
    payment_settings,
    proof_states,
    with_mint,
)
from tests.support.backends import free_port
from tests.support.mint import RunningMint
from tests.support.nutshell import NutshellWallet


def _bearer(credential: str) -> dict[str, str]:
    return {"authorization": f"Bearer {credential}"}


async def test_token_as_key_credits_the_token_once_and_reuses_the_key(
    node: AsyncTestClient[Any], wallet: NutshellWallet, tables: TableCounts
) -> None:
    token = await new_token(wallet, 100)

    first = await node.get("/v1/balance/info", headers=_bearer(token))
    second = await node.get("/v1/wallet/info", headers=_bearer(token))

    assert first.status_code == 200, first.text
    assert first.json()["balance"] == 100_000
    assert first.json()["api_key"] == token_api_key(token)
    assert second.json()["balance"] == 100_000
    assert await tables.count("ledger_entries", kind="deposit") == 1
    assert await proof_states(token) == {ProofStateKind.SPENT}


async def test_token_key_works_as_sk_key_afterwards(node: AsyncTestClient[Any], wallet: NutshellWallet) -> None:
    token = await new_token(wallet, 10)
    await node.get("/v1/balance/info", headers=_bearer(token))

    response = await node.get("/v1/balance/info", headers=_bearer(token_api_key(token)))

    assert response.status_code == 200
    assert response.json()["balance"] == 10_000


async def test_create_is_idempotent_per_token_by_query_and_json(
    node: AsyncTestClient[Any], wallet: NutshellWallet, tables: TableCounts
) -> None:
    token = await new_token(wallet, 21)

    by_query = await node.get("/v1/balance/create", params={"initial_balance_token": token})
    by_json = await node.post("/v1/balance/create", json={"cashu_token": token})
    by_legacy_json = await node.post("/v1/wallet/create", json={"initial_balance_token": token})

    assert by_query.status_code == 200, by_query.text
    assert by_query.json() == {"api_key": token_api_key(token), "balance": 21_000}
    assert by_json.json() == by_query.json()
    assert by_legacy_json.json() == by_query.json()
    assert await tables.count("ledger_entries", kind="deposit") == 1


async def test_topup_credits_the_key_from_its_own_mint(node: AsyncTestClient[Any], wallet: NutshellWallet) -> None:
    created = (await node.post("/v1/balance/create", json={"cashu_token": await new_token(wallet, 8)})).json()
    topup = await new_token(wallet, 5)

    response = await node.post("/v1/balance/topup", params={"cashu_token": topup}, headers=_bearer(created["api_key"]))
    again = await node.post("/v1/balance/topup", json={"cashu_token": topup}, headers=_bearer(created["api_key"]))
    info = await node.get("/v1/balance/info", headers=_bearer(created["api_key"]))

    assert response.status_code == 200, response.text
    assert response.json() == {"msats": 5_000}
    assert again.json() == {"msats": 5_000}
    assert info.json()["balance"] == 13_000


async def test_topup_refuses_values_that_are_not_tokens(node: AsyncTestClient[Any], wallet: NutshellWallet) -> None:
    created = (await node.post("/v1/balance/create", json={"cashu_token": await new_token(wallet, 8)})).json()

    response = await node.post("/v1/balance/topup", json={"cashu_token": "cashu"}, headers=_bearer(created["api_key"]))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


async def test_double_spent_token_is_400_and_creates_no_key_or_entry(
    node: AsyncTestClient[Any], wallet: NutshellWallet, tables: TableCounts
) -> None:
    token = await new_token(wallet, 16)
    await wallet.receive(token)  # nutshell spends it first

    by_bearer = await node.get("/v1/balance/info", headers=_bearer(token))
    by_create = await node.post("/v1/balance/create", json={"cashu_token": token})

    for response in (by_bearer, by_create):
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["error"]["code"] == "cashu_token_already_spent"
        assert body["error"]["type"] == "token_already_spent"
        assert body["request_id"]
    assert await tables.count("api_keys") == 0
    assert await tables.count("ledger_entries") == 0


async def test_untrusted_mint_is_400_naming_accepted_mints_and_is_never_contacted(
    node: AsyncTestClient[Any], wallet: NutshellWallet, recorder: RecordingServer, trusted_mint: RunningMint
) -> None:
    token = with_mint(await new_token(wallet, 4), recorder.url)

    by_bearer = await node.get("/v1/balance/info", headers=_bearer(token))
    by_create = await node.post("/v1/balance/create", json={"cashu_token": token})

    for response in (by_bearer, by_create):
        assert response.status_code == 400
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("invalid_token", "untrusted_mint")
        assert trusted_mint.url in error["message"]
    assert recorder.paths == []


async def test_wrong_unit_is_400_before_any_mint_contact(
    sqlite_database_url: str, wallet: NutshellWallet, recorder: RecordingServer, trusted_mint: RunningMint
) -> None:
    settings = payment_settings(sqlite_database_url, [trusted_mint.url, recorder.url])
    token = with_mint(await new_token(wallet, 4), recorder.url, unit="usd")

    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await client.post("/v1/balance/create", json={"cashu_token": token})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_unit"
    assert recorder.paths == []


async def test_fee_mint_credits_amount_minus_input_fee(
    sqlite_database_url: str, trusted_mint: RunningMint, untrusted_mint: RunningMint, fee_wallet: NutshellWallet
) -> None:
    settings = payment_settings(sqlite_database_url, [trusted_mint.url, untrusted_mint.url])
    token = await new_token(fee_wallet, 64)
    proofs = len(CODEC.decode_token(token).proofs)
    fee = -(-proofs * untrusted_mint.input_fee_ppk // 1000)

    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await client.post("/v1/balance/create", json={"cashu_token": token})

    assert response.status_code == 200, response.text
    assert fee >= 1
    assert response.json()["balance"] == (64 - fee) * 1000


async def test_unreachable_mint_is_503_and_leaves_the_token_unspent(
    sqlite_database_url: str, trusted_mint: RunningMint, wallet: NutshellWallet, tables: TableCounts, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings = payment_settings(sqlite_database_url, [trusted_mint.url, dead], MINT_RETRY_MAX_ATTEMPTS="1")
    token = await new_token(wallet, 8)

    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await client.post("/v1/balance/create", json={"cashu_token": with_mint(token, dead)})

    assert response.status_code == 503
    assert response.json()["error"]["type"] == "mint_unreachable"
    assert await proof_states(token) == {ProofStateKind.UNSPENT}
    assert await tables.count("ledger_entries") == 0
    assert await NutshellWallet(trusted_mint.url, tmp_path / "other").receive(token) == 8
