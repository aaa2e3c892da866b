"""Bad input, upstream failures and usage fallbacks through the served node: what is charged and what is not."""

import httpx
import openai
import pytest

from tests.support.echo_upstream import EchoUpstream
from tests.support.node import LedgerProbe, ServedNode, extra, node_settings

CHAT = {"model": "echo/echo-1", "messages": [{"role": "user", "content": "hi there"}]}


def _post(node: ServedNode, key: str, body: object, path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.post(node.url + path, json=body, headers={"authorization": f"Bearer {key}"}, timeout=30)


def _error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


@pytest.mark.parametrize(
    "case",
    [
        ({**CHAT, "model": "no-such-model"}, 404, "model_not_found"),
        ({**CHAT, "max_tokens": -1}, 400, "invalid_request"),
        ({**CHAT, "max_tokens": "10"}, 400, "invalid_request"),
        ({"messages": CHAT["messages"]}, 400, "invalid_request"),
    ],
)
def test_bad_request_is_refused_without_moving_money(
    node: ServedNode, funded_key: str, probe: LedgerProbe, case: tuple[object, int, str]
) -> None:
    body, status, code = case
    before = probe.key(funded_key)

    response = _post(node, funded_key, body)

    assert response.status_code == status
    assert _error_code(response) == code
    assert response.json()["request_id"] == response.headers["x-routstr-request-id"]
    assert probe.key(funded_key) == before


def test_invalid_json_is_400_invalid_json(node: ServedNode, funded_key: str) -> None:
    response = httpx.post(
        node.url + "/v1/chat/completions",
        content=b"{not json",
        headers={"authorization": f"Bearer {funded_key}", "content-type": "application/json"},
    )

    assert response.status_code == 400
    assert _error_code(response) == "invalid_json"


def test_body_over_25_mib_is_413(node: ServedNode, funded_key: str) -> None:
    response = httpx.post(
        node.url + "/v1/chat/completions",
        content=b'{"model":"echo/echo-1","pad":"' + b"x" * (25 * 1024 * 1024 + 10) + b'"}',
        headers={"authorization": f"Bearer {funded_key}", "content-type": "application/json"},
        timeout=60,
    )

    assert response.status_code == 413
    assert _error_code(response) == "request_too_large"


def test_unknown_key_is_401_and_missing_key_is_401(node: ServedNode) -> None:
    unknown = _post(node, "sk-" + "0" * 64, CHAT)
    missing = httpx.post(node.url + "/v1/chat/completions", json=CHAT)

    assert (unknown.status_code, _error_code(unknown)) == (401, "invalid_api_key")
    assert missing.status_code in {401, 402}


def test_insufficient_balance_is_402_with_required_and_available(
    node: ServedNode, probe: LedgerProbe, echo: EchoUpstream
) -> None:
    key = probe.create_key(5)

    response = _post(node, key, CHAT)

    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "insufficient_balance"
    assert error["details"]["model"] == "echo/echo-1"
    assert error["details"]["required_msat"] > error["details"]["available_msat"] == 5
    assert probe.key(key).balance.value == 5
    assert [r for r in echo.received if r.method == "POST"] == []


@pytest.mark.parametrize("status", [500, 503, 429, 401])
def test_upstream_failure_before_first_byte_charges_nothing(
    node: ServedNode, funded_key: str, probe: LedgerProbe, status: int
) -> None:
    before = probe.key(funded_key)

    response = _post(node, funded_key, {**CHAT, "echo": {"status": status}})

    expected = 429 if status == 429 else 502
    assert response.status_code == expected
    assert _error_code(response) == ("UPSTREAM_RATE_LIMIT" if status == 429 else "upstream_error")
    if status == 429:
        assert response.headers["retry-after"] == "7"
    after = probe.key(funded_key)
    assert (after.balance, after.reserved) == (before.balance, before.reserved)
    reservation = probe.reservation(response.headers["x-routstr-request-id"])
    assert reservation is not None
    assert reservation.status.value == "released"


def test_upstream_400_is_returned_with_request_id_and_free(
    node: ServedNode, funded_key: str, probe: LedgerProbe
) -> None:
    before = probe.key(funded_key)

    response = _post(node, funded_key, {**CHAT, "echo": {"status": 400}})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "scripted"
    assert response.json()["request_id"] == response.headers["x-routstr-request-id"]
    assert probe.key(funded_key).balance == before.balance


def test_missing_usage_is_charged_the_estimate(client: openai.OpenAI, probe: LedgerProbe, funded_key: str) -> None:
    before = probe.key(funded_key).balance.value

    raw = client.chat.completions.with_raw_response.create(
        model="echo/echo-1",
        messages=[{"role": "user", "content": "estimate me please"}],
        extra_body={"echo": {"omit_usage": True}},
    )
    completion = raw.parse()

    cost = extra(completion.usage)["cost"]
    assert cost["estimated"] is True
    assert cost["total_msats"] >= 1
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert before - probe.key(funded_key).balance.value == cost["total_msats"]


def test_stream_without_usage_gets_synthesized_estimated_cost_chunk(
    client: openai.OpenAI, probe: LedgerProbe, funded_key: str
) -> None:
    before = probe.key(funded_key).balance.value

    chunks = list(
        client.chat.completions.create(
            model="echo/echo-1",
            messages=[{"role": "user", "content": "no usage here"}],
            stream=True,
            extra_body={"echo": {"omit_usage": True}},
        )
    )

    usage = chunks[-1].usage
    assert usage is not None
    assert extra(usage)["cost"]["estimated"] is True
    assert usage.completion_tokens > 0
    assert before - probe.key(funded_key).balance.value == extra(usage)["cost"]["total_msats"]


def test_responses_stream_is_billed_from_response_usage(
    client: openai.OpenAI, probe: LedgerProbe, funded_key: str
) -> None:
    before = probe.key(funded_key).balance.value

    events = list(client.responses.create(model="echo/echo-1", input="bill me from usage", stream=True))

    completed = [e for e in events if e.type == "response.completed"]
    assert len(completed) == 1
    usage = completed[0].response.usage
    assert usage is not None
    cost = extra(usage)["cost"]
    assert cost["estimated"] is False
    assert usage.output_tokens == 4
    assert before - probe.key(funded_key).balance.value == cost["total_msats"] > 0


def test_embeddings_are_billed_for_input_only(client: openai.OpenAI, probe: LedgerProbe, funded_key: str) -> None:
    before = probe.key(funded_key).balance.value

    raw = client.embeddings.with_raw_response.create(model="echo/echo-embed", input="a b c")

    assert int(raw.headers["x-routstr-output-cost-msats"]) == 0
    assert before - probe.key(funded_key).balance.value == int(raw.headers["x-routstr-cost-msats"]) > 0


def test_passthrough_costs_at_least_the_per_request_price(
    node: ServedNode, funded_key: str, probe: LedgerProbe
) -> None:
    before = probe.key(funded_key).balance.value

    response = _post(node, funded_key, {"model": "echo/echo-1", "input": "x"}, path="/v1/moderations")

    assert response.status_code == 200
    charged = int(response.headers["x-routstr-cost-msats"])
    assert charged >= 1000  # FIXED_COST_PER_REQUEST default: 1 sat
    assert before - probe.key(funded_key).balance.value == charged


def test_unprefixed_alias_acts_as_v1_route(node: ServedNode, funded_key: str) -> None:
    response = _post(node, funded_key, CHAT, path="/chat/completions")

    assert response.status_code == 200
    assert int(response.headers["x-routstr-cost-msats"]) > 0


def test_get_on_unknown_v1_route_is_404(node: ServedNode) -> None:
    response = httpx.get(node.url + "/v1/not-a-route")

    assert response.status_code == 404
    assert _error_code(response) == "not_found"


def test_upstream_silent_past_the_idle_timeout_is_504_and_free(
    sqlite_database_url: str, echo: EchoUpstream, probe: LedgerProbe
) -> None:
    key = probe.create_key(1_000_000)
    settings = node_settings(sqlite_database_url, echo.base_url, UPSTREAM_TIMEOUT_SECONDS="1")

    with ServedNode(settings) as node:
        response = _post(node, key, {**CHAT, "echo": {"first_byte_delay_ms": 2500}})

    assert response.status_code == 504
    assert _error_code(response) == "upstream_timeout"
    assert probe.key(key).balance.value == 1_000_000
    assert probe.key(key).reserved.value == 0
