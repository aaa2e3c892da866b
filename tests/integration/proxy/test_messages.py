"""The native Anthropic Messages API: served only by `anthropic` providers, billed from additive usage."""

import json
from pathlib import Path

import httpx

from app.domain.pricing import FeeSchedule, ModelPricing, PricingPolicy, charge_for
from app.domain.usage import Usage
from tests.support.echo_upstream import EchoUpstream
from tests.support.node import LedgerProbe, ServedNode, node_settings

BODY = {"model": "echo/echo-1", "max_tokens": 64, "messages": [{"role": "user", "content": "bonjour le monde"}]}
ECHO_1 = ModelPricing.from_usd(
    prompt="0.000001", completion="0.000002", context_length=8192, max_completion_tokens=1024
)


def _serve(tmp_path: Path, database_url: str, echo: EchoUpstream, provider_type: str) -> ServedNode:
    path = tmp_path / "providers.json"
    provider = {"id": "claude", "type": provider_type, "base_url": echo.base_url, "api_key": "anthropic-key"}
    path.write_text(json.dumps({"providers": [provider]}))
    return ServedNode(node_settings(database_url, "http://127.0.0.1:9/v1", PROVIDERS_PATH=str(path)))


def _expected(input_tokens: int, output_tokens: int) -> int:
    usage = Usage(input=input_tokens, output=output_tokens)
    return charge_for(usage, ECHO_1, PricingPolicy(fees=FeeSchedule()), 100_000 * 10**6).total.value


def test_messages_are_billed_and_streams_end_with_a_cost_event(
    tmp_path: Path, sqlite_database_url: str, echo: EchoUpstream, probe: LedgerProbe
) -> None:
    key = probe.create_key(10_000_000)
    headers = {"authorization": f"Bearer {key}", "anthropic-version": "2023-06-01"}

    with _serve(tmp_path, sqlite_database_url, echo, "anthropic") as node:
        plain = httpx.post(node.base_url + "/messages", json=BODY, headers=headers)
        streamed = httpx.post(node.url + "/messages", json={**BODY, "stream": True}, headers=headers)

    assert plain.status_code == 200
    assert plain.json()["usage"]["cost"]["total_msats"] == _expected(6, 3)
    lines = streamed.text.strip().split("\n")
    assert lines[-2:] == ["event: cost", lines[-1]]
    cost = json.loads(lines[-1].removeprefix("data: "))
    assert cost["total_msats"] == _expected(6, 3)  # input from message_start, output from message_delta
    assert "event: message_stop" in streamed.text
    assert 10_000_000 - probe.key(key).balance.value == 2 * _expected(6, 3)
    received = [r for r in echo.received if r.method == "POST"]
    assert {r.headers["x-api-key"] for r in received} == {"anthropic-key"}
    assert {r.headers["anthropic-version"] for r in received} == {"2023-06-01"}


def test_messages_on_an_openai_provider_is_404_model_not_found(
    tmp_path: Path, sqlite_database_url: str, echo: EchoUpstream, probe: LedgerProbe
) -> None:
    key = probe.create_key(10_000_000)

    with _serve(tmp_path, sqlite_database_url, echo, "openai") as node:
        response = httpx.post(node.base_url + "/messages", json=BODY, headers={"authorization": f"Bearer {key}"})

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert probe.key(key).balance.value == 10_000_000
