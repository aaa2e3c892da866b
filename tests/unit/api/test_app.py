"""The app edge: info, health, balance info, request ids and the error envelope for every failure."""

import io
import json
import logging
import uuid

import pytest

from app.infrastructure.app import create_app
from app.infrastructure.container import Adapters
from app.infrastructure.logging import configure_logging
from app.infrastructure.settings import Settings
from tests.fakes.clock import FixedClock
from tests.fakes.ledger import InMemoryLedger, InMemoryLedgerAudit
from tests.fakes.storage import FakeStorageHealth
from tests.unit.api.conftest import KEY, FakeNode


def _assert_envelope(body: dict[str, object], code: str) -> None:
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["type"], str)
    assert uuid.UUID(str(body["request_id"])).version == 4


async def test_get_root_returns_running_node(node: FakeNode) -> None:
    response = await node.client.get("/")

    assert response.status_code == 200
    assert response.json() == {
        "name": "TestNode",
        "description": "A Routstr Node",
        "version": "0.1.0",
        "status": "running",
    }


async def test_get_info_returns_mints_fees_and_nuts(node: FakeNode) -> None:
    response = await node.client.get("/v1/info")

    body = response.json()
    assert response.status_code == 200
    assert body["mints"] == ["http://127.0.0.1:3338"]
    assert body["primary_mint"] == "http://127.0.0.1:3338"
    assert body["unit"] == "sat"
    assert body["fees"]["exchange_fee"] == "1.005"
    assert body["fees"]["upstream_provider_fee"] == "1.05"
    assert body["nuts"] == ["24"]
    assert body["child_key_cost_msats"] == 0
    assert body["pricing_mode"] == "model"


async def test_every_response_carries_a_uuid4_request_id(node: FakeNode) -> None:
    ok = await node.client.get("/")
    missing = await node.client.get("/nope")

    ids = {ok.headers["x-routstr-request-id"], missing.headers["x-routstr-request-id"]}
    assert len(ids) == 2
    assert all(uuid.UUID(i).version == 4 for i in ids)
    assert missing.json()["request_id"] == missing.headers["x-routstr-request-id"]


async def test_get_health_returns_200_when_database_is_ok(node: FakeNode) -> None:
    response = await node.client.get("/health")

    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"


async def test_get_health_returns_503_naming_the_failing_check(node: FakeNode) -> None:
    node.storage.problem = "database is not migrated to head"

    response = await node.client.get("/health")

    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "database is not migrated to head"


@pytest.mark.parametrize("path", ["/v1/balance/info", "/v1/balance/", "/v1/wallet/info"])
async def test_get_balance_info_returns_available_balance(node: FakeNode, path: str) -> None:
    response = await node.client.get(path, headers={"Authorization": f"Bearer {KEY}"})

    body = response.json()
    assert response.status_code == 200
    assert body["api_key"] == KEY
    assert body["balance"] == 5_000_000
    assert body["reserved"] == 0
    assert body["is_child"] is False


async def test_get_balance_info_accepts_key_without_sk_prefix(node: FakeNode) -> None:
    response = await node.client.get("/v1/balance/info", headers={"Authorization": f"Bearer {KEY[3:]}"})

    assert response.status_code == 200
    assert response.json()["api_key"] == KEY


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer "}, "missing_api_key"),
        ({"Authorization": "Basic abc"}, "missing_api_key"),
        ({"Authorization": "Bearer sk-nothex"}, "invalid_api_key"),
        ({"Authorization": "Bearer sk-" + "f" * 64}, "invalid_api_key"),
    ],
)
async def test_get_balance_info_returns_401_envelope_for_bad_credentials(
    node: FakeNode, headers: dict[str, str], code: str
) -> None:
    response = await node.client.get("/v1/balance/info", headers=headers)

    assert response.status_code == 401
    _assert_envelope(response.json(), code)


async def test_unknown_route_returns_404_envelope(node: FakeNode) -> None:
    response = await node.client.get("/v1/does-not-exist")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    _assert_envelope(response.json(), "not_found")


async def test_wrong_method_returns_405_envelope(node: FakeNode) -> None:
    response = await node.client.delete("/v1/info")

    assert response.status_code == 405
    _assert_envelope(response.json(), "method_not_allowed")


async def test_storage_failure_returns_500_envelope_without_traceback(node: FakeNode) -> None:
    node.ledger.fail_next = RuntimeError("connection refused to secret-host")

    response = await node.client.get("/v1/balance/info", headers={"Authorization": f"Bearer {KEY}"})

    assert response.status_code == 500
    _assert_envelope(response.json(), "internal_error")
    assert "secret-host" not in response.text
    assert "Traceback" not in response.text
    assert response.json()["request_id"] in response.json()["error"]["message"]


def test_create_app_keeps_the_configured_log_level(settings: Settings) -> None:
    configure_logging("WARNING")
    ledger = InMemoryLedger()

    create_app(settings, Adapters(FixedClock(), ledger, InMemoryLedgerAudit(ledger), FakeStorageHealth()))

    assert logging.getLogger().level == logging.WARNING


async def test_log_lines_carry_the_request_id_of_the_response(node: FakeNode) -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    node.ledger.fail_next = RuntimeError("boom")

    response = await node.client.get("/v1/balance/info", headers={"Authorization": f"Bearer {KEY}"})

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    failure = next(line for line in lines if line["event"] == "unhandled_error")
    assert failure["request_id"] == response.headers["x-routstr-request-id"]
    assert failure["route"] == "/v1/balance/info"
