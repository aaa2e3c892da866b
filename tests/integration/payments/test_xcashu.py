"""X-Cashu pay-per-request and NUT-24 against real nutshell mints, the echo upstream and the served node
(SPEC §18 scenarios 3, 4, 9 and the X-Cashu part of 12)."""

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from app.domain.cashu import ProofStateKind
from app.domain.money import MSAT_PER_SAT
from app.domain.wallet import token_key_hash
from tests.integration.payments.conftest import CODEC, TableCounts, new_token, proof_states, with_mint
from tests.support.echo_upstream import EchoUpstream
from tests.support.forwarder import TcpForwarder
from tests.support.mint import RunningMint
from tests.support.node import ServedNode, extra, headers_of, node_settings
from tests.support.nutshell import NutshellWallet, nutshell_decode_payment_request

CHAT = {"model": "echo/echo-1", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16}


@pytest.fixture
def echo() -> Iterator[EchoUpstream]:
    with EchoUpstream() as upstream:
        yield upstream


@pytest.fixture
def served(sqlite_database_url: str, echo: EchoUpstream, trusted_mint: RunningMint) -> Iterator[ServedNode]:
    with ServedNode(node_settings(sqlite_database_url, echo.base_url, CASHU_MINTS=trusted_mint.url)) as node:
        yield node


async def _wait_for(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    msg = "condition not reached in time"
    raise AssertionError(msg)


def _data_events(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


# -- scenario 3: change in the header and in the stream's change event ----------------------------------------------
async def test_x_cashu_change_header_is_received_by_nutshell_and_adds_up_to_the_token(
    served: ServedNode, echo: EchoUpstream, wallet: NutshellWallet, tables: TableCounts, tmp_path: Path
) -> None:
    token = await new_token(wallet, 100)
    async with openai.AsyncOpenAI(
        base_url=served.base_url, api_key="unused", default_headers={"X-Cashu": token}, max_retries=0, timeout=30
    ) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="echo/echo-1", messages=[{"role": "user", "content": "hello"}], max_tokens=16
        )
    completion = raw.parse()
    usage = extra(completion.usage)
    change_token = headers_of(raw.headers)["x-cashu"]

    change = CODEC.decode_token(change_token)
    assert (change.mint, change.unit) == (wallet.mint_url, "sat")
    assert usage["cost_sats"] + change.amount == 100
    assert change.amount == (100_000 - usage["cost"]["total_msats"]) // MSAT_PER_SAT
    receiver = NutshellWallet(wallet.mint_url, tmp_path / "receiver")
    assert await receiver.receive(change_token) == change.amount
    assert await tables.count("refunds", kind="change", state="issued") == 1
    forwarded = [r for r in echo.received if r.method == "POST"]
    assert len(forwarded) == 1
    assert "x-cashu" not in forwarded[0].headers
    assert "cashu" not in str(forwarded[0].headers).lower()


async def test_x_cashu_stream_ends_with_change_event_before_done_and_nutshell_receives_it(
    served: ServedNode, wallet: NutshellWallet, trusted_mint: RunningMint, tmp_path: Path
) -> None:
    token = await new_token(wallet, 100)
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
        response = await http.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers={"X-Cashu": token})

    events = _data_events(response.text)
    assert response.status_code == 200
    assert events[-1] == "[DONE]"
    cost = json.loads(events[-3])
    change = json.loads(events[-2])
    assert list(change) == ["id", "object", "created", "model", "choices", "x_cashu", "amount", "unit", "request_id"]
    assert change["object"] == "routstr.change"
    assert change["id"] == cost["id"]
    assert (change["model"], change["choices"], change["unit"]) == ("echo/echo-1", [], "sat")
    assert change["request_id"] == response.headers["x-routstr-request-id"]
    assert cost["usage"]["cost_sats"] + change["amount"] == 100
    receiver = NutshellWallet(trusted_mint.url, tmp_path / "receiver")
    assert await receiver.receive(change["x_cashu"]) == change["amount"]


async def test_x_cashu_change_on_postgresql_is_journaled_once_per_request(
    postgres_database_url: str, echo: EchoUpstream, wallet: NutshellWallet, tmp_path: Path
) -> None:
    settings = node_settings(postgres_database_url, echo.base_url, CASHU_MINTS=wallet.mint_url)
    token = await new_token(wallet, 100)
    with ServedNode(settings) as node:
        async with httpx.AsyncClient(base_url=node.url, timeout=30) as http:
            response = await http.post("/v1/chat/completions", json=CHAT, headers={"X-Cashu": token})
            refund = await http.post("/v1/balance/refund", headers={"X-Cashu": token})

    assert response.status_code == 200, response.text
    change = CODEC.decode_token(response.headers["x-cashu"])
    assert response.json()["usage"]["cost_sats"] + change.amount == 100
    assert refund.json()["token"] == response.headers["x-cashu"]
    tables = TableCounts(postgres_database_url)  # shared by the run: count this token's key only
    key_hash = token_key_hash(token)
    assert await tables.count("refunds", key_hash=key_hash, kind="change") == 1
    assert await tables.count("ledger_entries", key_hash=key_hash, kind="charge") == 1
    receiver = NutshellWallet(wallet.mint_url, tmp_path / "receiver")
    assert await receiver.receive(response.headers["x-cashu"]) == change.amount


# -- scenario 4: the X-Cashu refund ------------------------------------------------------------------------------------
async def test_x_cashu_refund_returns_same_change_and_404_for_unknown_token(
    served: ServedNode, wallet: NutshellWallet
) -> None:
    token = await new_token(wallet, 50)
    unknown = await new_token(wallet, 5)
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
        paid = await http.post("/v1/chat/completions", json=CHAT, headers={"X-Cashu": token})
        refund = await http.post("/v1/balance/refund", headers={"X-Cashu": token})
        missing = await http.post("/v1/wallet/refund", headers={"X-Cashu": unknown})

    assert paid.status_code == 200, paid.text
    assert refund.status_code == 200, refund.text
    assert refund.json()["token"] == paid.headers["x-cashu"]
    assert refund.headers["x-cashu"] == paid.headers["x-cashu"]
    assert refund.json()["sats"] == str(CODEC.decode_token(paid.headers["x-cashu"]).amount)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "token_not_found"
    assert await proof_states(unknown) == {ProofStateKind.UNSPENT}


async def test_x_cashu_refund_is_410_when_the_token_was_fully_spent(
    sqlite_database_url: str, echo: EchoUpstream, trusted_mint: RunningMint, wallet: NutshellWallet
) -> None:
    settings = node_settings(sqlite_database_url, echo.base_url, CASHU_MINTS=trusted_mint.url, MIN_REQUEST_MSAT="1000")
    token = await new_token(wallet, 1)
    with ServedNode(settings) as node:
        async with httpx.AsyncClient(base_url=node.url, timeout=30) as http:
            paid = await http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 1}, headers={"X-Cashu": token})
            refund = await http.post("/v1/balance/refund", headers={"X-Cashu": token})
            again = await http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 1}, headers={"X-Cashu": token})

    assert paid.status_code == 200, paid.text
    assert paid.json()["usage"]["cost_sats"] == 1
    assert "x-cashu" not in paid.headers
    assert refund.status_code == 410
    assert refund.json()["error"]["code"] == "change_unavailable"
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "cashu_token_already_spent"


async def test_x_cashu_change_is_pending_while_mint_is_down_then_refund_pays_it(
    sqlite_database_url: str, echo: EchoUpstream, trusted_mint: RunningMint, tmp_path: Path
) -> None:
    with TcpForwarder(trusted_mint.port) as forwarder:
        settings = node_settings(
            sqlite_database_url, echo.base_url, CASHU_MINTS=forwarder.url, MINT_RETRY_MAX_ATTEMPTS="1"
        )
        wallet = NutshellWallet(forwarder.url, tmp_path / "wallet")
        token = await new_token(wallet, 64)
        body = {**CHAT, "stream": True, "echo": {"delay_ms": 200}}
        with ServedNode(settings) as node:
            async with httpx.AsyncClient(base_url=node.url, timeout=60) as http:
                async with http.stream("POST", "/v1/chat/completions", json=body, headers={"X-Cashu": token}) as stream:
                    lines = stream.aiter_lines()
                    first = await anext(lines)
                    in_flight = await http.post("/v1/balance/refund", headers={"X-Cashu": token})
                    forwarder.down()
                    rest = [line async for line in lines]
                events = _data_events("\n".join([first, *rest]))
                forwarder.up()
                refund = await http.post("/v1/balance/refund", headers={"X-Cashu": token})

        cost = json.loads(events[-3])
        change = json.loads(events[-2])
        assert first.startswith("data: ")
        assert in_flight.status_code == 425
        assert in_flight.headers["retry-after"] == "2"
        assert in_flight.json()["error"]["code"] == "request_in_progress"
        assert events[-1] == "[DONE]"
        assert change["x_cashu"] is None
        assert change["pending"] is True
        owed = 64 - cost["usage"]["cost_sats"]
        assert change["amount"] == owed
        assert refund.status_code == 200, refund.text
        assert refund.json()["sats"] == str(owed)
        receiver = NutshellWallet(forwarder.url, tmp_path / "receiver")
        assert await receiver.receive(refund.json()["token"]) == owed


async def test_x_cashu_non_streamed_change_pending_header_while_mint_is_down(
    sqlite_database_url: str, echo: EchoUpstream, trusted_mint: RunningMint, tmp_path: Path
) -> None:
    with TcpForwarder(trusted_mint.port) as forwarder:
        settings = node_settings(
            sqlite_database_url, echo.base_url, CASHU_MINTS=forwarder.url, MINT_RETRY_MAX_ATTEMPTS="1"
        )
        token = await new_token(NutshellWallet(forwarder.url, tmp_path / "wallet"), 64)
        body = {**CHAT, "echo": {"first_byte_delay_ms": 1500}}
        with ServedNode(settings) as node:
            async with httpx.AsyncClient(base_url=node.url, timeout=60) as http:
                call = asyncio.create_task(http.post("/v1/chat/completions", json=body, headers={"X-Cashu": token}))
                await _wait_for(lambda: any(r.method == "POST" for r in echo.received))  # redeemed, upstream waits
                forwarder.down()
                response = await call
                forwarder.up()
                refund = await http.post("/v1/balance/refund", headers={"X-Cashu": token})

    assert response.status_code == 200, response.text
    owed = 64 - response.json()["usage"]["cost_sats"]
    assert "x-cashu" not in response.headers
    assert response.headers["x-routstr-change-pending"] == str(owed)
    assert refund.status_code == 200, refund.text
    assert CODEC.decode_token(refund.json()["token"]).amount == owed


async def test_x_cashu_responses_stream_ends_with_named_change_event(
    served: ServedNode, wallet: NutshellWallet
) -> None:
    token = await new_token(wallet, 50)
    body = {"model": "echo/echo-1", "input": "hello there", "stream": True, "max_output_tokens": 16}
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
        response = await http.post("/v1/responses", json=body, headers={"X-Cashu": token})

    blocks = [b for b in response.text.replace("\r\n", "\n").split("\n\n") if b.strip()]
    assert response.status_code == 200
    assert blocks[-1].startswith("event: routstr.change\ndata: ")
    change = json.loads(blocks[-1].split("data: ", 1)[1])
    completed = json.loads(blocks[-2].split("data: ", 1)[1])
    assert completed["type"] == "response.completed"
    assert change["id"] == completed["response"]["id"]
    assert change["amount"] + completed["response"]["usage"]["cost_sats"] == 50
    assert CODEC.decode_token(change["x_cashu"]).amount == change["amount"]


# -- scenario 9: NUT-24 --------------------------------------------------------------------------------------------
async def test_402_carries_creq_decoded_by_nutshell_and_paying_it_from_listed_mint_succeeds(
    served: ServedNode, wallet: NutshellWallet, trusted_mint: RunningMint, tables: TableCounts
) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
        demand = await http.post("/v1/chat/completions", json=CHAT)
        creq = demand.headers["x-cashu"]
        request = CODEC.decode_payment_request(creq)
        by_nutshell = await nutshell_decode_payment_request(creq)
        assert request.amount is not None
        token = await new_token(wallet, request.amount)
        paid = await http.post("/v1/chat/completions", json=CHAT, headers={"X-Cashu": token})

    assert demand.status_code == 402
    error = demand.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "payment_required")
    details = error["details"]
    assert details["available_msat"] == 0
    assert details["model"] == "echo/echo-1"
    assert creq.startswith("creqA")
    assert request.amount == -(-details["required_msat"] // MSAT_PER_SAT)
    assert (request.unit, request.mints, request.single_use) == ("sat", (trusted_mint.url,), True)
    assert request.description == "routstr echo/echo-1"
    assert (by_nutshell["a"], by_nutshell["u"], by_nutshell["m"], by_nutshell["s"]) == (
        request.amount,
        "sat",
        [trusted_mint.url],
        True,
    )
    assert paid.status_code == 200, paid.text
    assert await tables.count("reservations") == 1


async def test_x_cashu_from_unlisted_mint_or_other_unit_is_400_and_never_touched(
    served: ServedNode, fee_wallet: NutshellWallet, wallet: NutshellWallet, untrusted_mint: RunningMint
) -> None:
    foreign = await new_token(fee_wallet, 100)
    listed = await new_token(wallet, 100)
    other_unit = with_mint(listed, CODEC.decode_token(listed).mint, unit="msat")
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
        untrusted = await http.post("/v1/chat/completions", json=CHAT, headers={"X-Cashu": foreign})
        wrong_unit = await http.post("/v1/chat/completions", json=CHAT, headers={"X-Cashu": other_unit})

    assert untrusted.status_code == 400
    assert untrusted.json()["error"]["code"] == "untrusted_mint"
    assert wrong_unit.status_code == 400
    assert wrong_unit.json()["error"]["code"] == "unsupported_unit"
    assert await proof_states(foreign, untrusted_mint.url) == {ProofStateKind.UNSPENT}
    assert await proof_states(listed) == {ProofStateKind.UNSPENT}


async def test_x_cashu_worth_less_than_the_reservation_is_402_with_creq_and_no_reservation(
    served: ServedNode, wallet: NutshellWallet, tables: TableCounts
) -> None:
    token = await new_token(wallet, 1)
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
        response = await http.post(
            "/v1/chat/completions", json={**CHAT, "max_tokens": 1000}, headers={"X-Cashu": token}
        )

    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "insufficient_balance"
    assert error["details"]["available_msat"] == 1000
    assert error["details"]["required_msat"] > 1000
    assert CODEC.decode_payment_request(response.headers["x-cashu"]).amount == -(
        -error["details"]["required_msat"] // MSAT_PER_SAT
    )
    assert await tables.count("reservations") == 0
    assert await tables.count("redemptions") == 0
    assert await proof_states(token) == {ProofStateKind.UNSPENT}


# -- scenario 12: upstream 500 before the first byte --------------------------------------------------------------
async def test_x_cashu_upstream_500_returns_the_whole_token_as_change_and_charges_nothing(
    served: ServedNode, wallet: NutshellWallet, trusted_mint: RunningMint, tables: TableCounts, tmp_path: Path
) -> None:
    token = await new_token(wallet, 32)
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
        response = await http.post(
            "/v1/chat/completions", json={**CHAT, "echo": {"status": 500}}, headers={"X-Cashu": token}
        )

    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_error"
    assert error["refund_token"] == response.headers["x-cashu"]
    assert CODEC.decode_token(error["refund_token"]).amount == 32
    assert await tables.count("ledger_entries", kind="charge") == 0
    receiver = NutshellWallet(trusted_mint.url, tmp_path / "receiver")
    assert await receiver.receive(error["refund_token"]) == 32


# -- concurrency ------------------------------------------------------------------------------------------------------
async def test_concurrent_x_cashu_requests_on_postgresql_each_get_their_own_change(
    postgres_database_url: str, echo: EchoUpstream, wallet: NutshellWallet
) -> None:
    tokens = [await new_token(wallet, 16) for _ in range(6)]
    shared = await new_token(wallet, 64)
    settings = node_settings(postgres_database_url, echo.base_url, CASHU_MINTS=wallet.mint_url)
    with ServedNode(settings) as node:
        async with httpx.AsyncClient(base_url=node.url, timeout=60) as http:
            distinct = await asyncio.gather(
                *(
                    http.post("/v1/chat/completions", json={**CHAT, "stream": n % 2 == 0}, headers={"X-Cashu": t})
                    for n, t in enumerate(tokens)
                )
            )
            same = await asyncio.gather(
                *(http.post("/v1/chat/completions", json=CHAT, headers={"X-Cashu": shared}) for _ in range(4))
            )

    for n, response in enumerate(distinct):
        assert response.status_code == 200, response.text
        if n % 2 == 0:
            events = _data_events(response.text)
            change, cost = json.loads(events[-2])["amount"], json.loads(events[-3])["usage"]["cost_sats"]
        else:
            change = CODEC.decode_token(response.headers["x-cashu"]).amount
            cost = response.json()["usage"]["cost_sats"]
        assert change + cost == 16
    statuses = sorted(r.status_code for r in same)
    assert 200 in statuses
    assert set(statuses) <= {200, 400, 425, 503}, [r.text for r in same]
    tables = TableCounts(postgres_database_url)  # shared by the run: count these keys only
    assert await tables.count("ledger_entries", key_hash=token_key_hash(shared), kind="deposit") == 1
    paid_back = sum(CODEC.decode_token(r.headers["x-cashu"]).amount for r in same if "x-cashu" in r.headers)
    # cost_sats rounds each charge up, so the books are checked in msat: change is paid in whole sats, rounded down.
    charged_msat = sum(r.json()["usage"]["cost"]["total_msats"] for r in same if r.status_code == 200)
    assert paid_back * 1000 + charged_msat <= 64_000
