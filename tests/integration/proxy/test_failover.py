"""Several upstreams from a providers file: failover before the first byte, growing the hold for a dearer candidate."""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.domain.accounts import LedgerEntry
from app.domain.money import Msat
from app.domain.pricing import FeeSchedule, ModelPricing, PricingPolicy, charge_for
from app.domain.usage import normalize_usage
from tests.support.backends import free_port
from tests.support.echo_upstream import EchoUpstream
from tests.support.node import LedgerProbe, ServedNode, node_settings

CHAT = {"model": "echo/echo-1", "messages": [{"role": "user", "content": "fail over please"}]}
PRICE = {"prompt": "0.000001", "completion": "0.000002"}


@pytest.fixture
def second_echo() -> Iterator[EchoUpstream]:
    with EchoUpstream() as upstream:
        yield upstream


def _providers_file(tmp_path: Path, *providers: dict[str, object]) -> str:
    path = tmp_path / "providers.json"
    path.write_text(json.dumps({"providers": list(providers)}))
    return str(path)


def _serve(database_url: str, providers_path: str) -> ServedNode:
    settings = node_settings(database_url, "http://127.0.0.1:9/v1", PROVIDERS_PATH=providers_path)
    return ServedNode(settings)


def _post(node: ServedNode, key: str, body: object) -> httpx.Response:
    return httpx.post(node.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})


def test_failover_bills_the_dearer_second_candidate_when_first_answers_503(
    tmp_path: Path, sqlite_database_url: str, probe: LedgerProbe, echo: EchoUpstream, second_echo: EchoUpstream
) -> None:
    echo.script = {"status": 503}
    path = _providers_file(
        tmp_path,
        {"id": "cheap", "type": "openai", "base_url": echo.base_url, "api_key": "a", "fee": "1.05"},
        {"id": "dear", "type": "openai", "base_url": second_echo.base_url, "api_key": "b", "fee": "1.10"},
    )
    key = probe.create_key(10_000_000)

    with _serve(sqlite_database_url, path) as node:
        response = _post(node, key, CHAT)

    assert response.status_code == 200
    usage = normalize_usage(response.json())
    assert usage is not None
    policy = PricingPolicy(fees=FeeSchedule(exchange_fee_ppm=1_005_000, provider_fee_ppm=1_100_000))
    pricing = ModelPricing.from_usd(
        prompt=PRICE["prompt"], completion=PRICE["completion"], context_length=8192, max_completion_tokens=1024
    )
    expected = charge_for(usage, pricing, policy, 100_000 * 10**6).total.value
    assert int(response.headers["x-routstr-cost-msats"]) == expected
    assert 10_000_000 - probe.key(key).balance.value == expected
    assert [r.path for r in echo.received if r.method == "POST"] == ["/v1/chat/completions"]
    assert [r.path for r in second_echo.received if r.method == "POST"] == ["/v1/chat/completions"]
    request_id = response.headers["x-routstr-request-id"]
    held = probe.reservation(request_id)
    assert held is not None
    assert (held.status.value, held.charged) == ("charged", Msat(expected))
    assert probe.reservation(f"{request_id}.1") is None  # the hold grew in place (SPEC §5), no second reservation
    charges = [e for e in probe.entries(key) if isinstance(e, LedgerEntry) and e.kind == "charge"]
    assert [e.request_id for e in charges] == [request_id]


def test_upstream_400_is_not_failed_over_and_is_free(
    tmp_path: Path, sqlite_database_url: str, probe: LedgerProbe, echo: EchoUpstream, second_echo: EchoUpstream
) -> None:
    echo.script = {"status": 400}
    path = _providers_file(
        tmp_path,
        {"id": "first", "type": "openai", "base_url": echo.base_url, "api_key": "a", "priority": 0},
        {"id": "second", "type": "openai", "base_url": second_echo.base_url, "api_key": "b", "priority": 1},
    )
    key = probe.create_key(10_000_000)

    with _serve(sqlite_database_url, path) as node:
        response = _post(node, key, CHAT)

    assert response.status_code == 400
    assert probe.key(key).balance.value == 10_000_000
    assert [r for r in second_echo.received if r.method == "POST"] == []


def test_connect_failure_fails_over_then_502_when_no_candidate_is_left(
    tmp_path: Path, sqlite_database_url: str, probe: LedgerProbe, echo: EchoUpstream
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    override = {"echo/echo-1": {"pricing": PRICE, "context_length": 8192}}
    both = _providers_file(
        tmp_path,
        {"id": "dead", "type": "openai", "base_url": dead, "api_key": "a", "priority": 0, "models": override},
        {"id": "live", "type": "openai", "base_url": echo.base_url, "api_key": "b", "priority": 1},
    )
    key = probe.create_key(10_000_000)

    with _serve(sqlite_database_url, both) as node:
        served = _post(node, key, CHAT)
    only_dead = _providers_file(
        tmp_path, {"id": "dead", "type": "openai", "base_url": dead, "api_key": "a", "models": override}
    )
    balance = probe.key(key).balance.value
    with _serve(sqlite_database_url, only_dead) as node:
        failed = _post(node, key, CHAT)

    assert served.status_code == 200
    assert failed.status_code == 502
    assert failed.json()["error"]["code"] == "upstream_error"
    assert probe.key(key).balance.value == balance
    assert probe.key(key).reserved.value == 0
