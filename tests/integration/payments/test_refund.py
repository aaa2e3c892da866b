"""Bearer refunds received by a real nutshell wallet, and a token used as the key of a proxied request (§18: 1, 5)."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from litestar.testing import AsyncTestClient

from app.domain.money import MSAT_PER_SAT
from tests.integration.payments.conftest import CODEC, TableCounts, new_token
from tests.support.echo_upstream import EchoUpstream
from tests.support.mint import RunningMint
from tests.support.node import LedgerProbe, ServedNode, extra, headers_of, node_settings
from tests.support.nutshell import NutshellWallet


def _bearer(credential: str) -> dict[str, str]:
    return {"authorization": f"Bearer {credential}"}


async def test_refund_is_received_by_nutshell_with_exact_amount_and_repeats_same_token(
    node: AsyncTestClient[Any], wallet: NutshellWallet, tables: TableCounts, trusted_mint: RunningMint, tmp_path: Path
) -> None:
    created = (await node.post("/v1/balance/create", json={"cashu_token": await new_token(wallet, 100)})).json()

    refund = await node.post("/v1/balance/refund", headers=_bearer(created["api_key"]))
    repeated = await node.post("/v1/wallet/refund", headers=_bearer(created["api_key"]))
    info = await node.get("/v1/balance/info", headers=_bearer(created["api_key"]))

    assert refund.status_code == 200, refund.text
    assert refund.json()["sats"] == "100"
    assert repeated.status_code == 200
    assert repeated.json() == refund.json()
    assert info.json()["balance"] == 0
    receiver = NutshellWallet(trusted_mint.url, tmp_path / "receiver")
    assert await receiver.receive(refund.json()["token"]) == 100
    assert await tables.count("refunds", state="issued") == 1


async def test_refund_is_401_without_a_known_key(node: AsyncTestClient[Any]) -> None:
    unknown = await node.post("/v1/balance/refund", headers=_bearer("sk-" + "0" * 64))
    missing = await node.post("/v1/balance/refund")

    assert unknown.status_code == 401
    assert unknown.json()["error"]["code"] == "invalid_api_key"
    assert missing.json()["error"]["code"] == "missing_api_key"


async def test_refund_of_operator_key_is_grant_not_refundable(
    node: AsyncTestClient[Any], sqlite_database_url: str
) -> None:
    key = LedgerProbe(sqlite_database_url).create_key(5_000)

    response = await node.post("/v1/balance/refund", headers=_bearer(key))

    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": response.json()["error"]["message"],
        "type": "refund_error",
        "code": "grant_not_refundable",
    }


@pytest.fixture
def echo() -> Iterator[EchoUpstream]:
    with EchoUpstream() as upstream:
        yield upstream


@pytest.fixture
def served(sqlite_database_url: str, echo: EchoUpstream, trusted_mint: RunningMint) -> Iterator[ServedNode]:
    with ServedNode(node_settings(sqlite_database_url, echo.base_url, CASHU_MINTS=trusted_mint.url)) as node:
        yield node


async def test_token_as_openai_key_pays_request_then_refund_swaps_rest_to_nutshell(
    served: ServedNode, wallet: NutshellWallet, trusted_mint: RunningMint, tmp_path: Path
) -> None:
    token = await new_token(wallet, 100)
    async with openai.AsyncOpenAI(base_url=served.base_url, api_key=token, max_retries=0, timeout=30) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="echo/echo-1", messages=[{"role": "user", "content": "hello"}], max_tokens=16
        )
    completion = raw.parse()
    cost = extra(completion.usage)["cost"]
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
        info = (await http.get("/v1/balance/info", headers=_bearer(token))).json()
        refund = await http.post("/v1/balance/refund", headers=_bearer(token))

    charged = cost["total_msats"]
    assert int(headers_of(raw.headers)["x-routstr-cost-msats"]) == charged
    assert 0 < charged < 100_000
    assert info["balance"] == 100_000 - charged
    assert refund.status_code == 200, refund.text
    refunded_sats = (100_000 - charged) // MSAT_PER_SAT
    assert refund.json()["sats"] == str(refunded_sats)
    assert CODEC.decode_token(refund.json()["token"]).amount == refunded_sats
    receiver = NutshellWallet(trusted_mint.url, tmp_path / "receiver")
    assert await receiver.receive(refund.json()["token"]) == refunded_sats
