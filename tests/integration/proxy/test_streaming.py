"""Streaming through the node: relayed as it arrives, cost chunk last, disconnects drained, leases kept alive."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

from app.domain.pricing import FeeSchedule, ModelPricing, PricingPolicy, charge_for
from app.domain.usage import Usage
from tests.support.backends import free_port, port_open
from tests.support.echo_upstream import EchoUpstream
from tests.support.node import LedgerProbe, ServedNode, extra, node_settings

RATE = 100_000 * 10**6
ECHO_1 = ModelPricing.from_usd(
    prompt="0.000001", completion="0.000002", context_length=8192, max_completion_tokens=1024
)


def _stream_body(chunks: int, delay_ms: int, **knobs: object) -> dict[str, object]:
    return {
        "model": "echo/echo-1",
        "messages": [{"role": "user", "content": "a b c"}],
        "stream": True,
        "echo": {"chunks": chunks, "delay_ms": delay_ms, **knobs},
    }


def _data_lines(raw: str) -> list[str]:
    return [line.removeprefix("data: ") for line in raw.split("\n") if line.startswith("data: ")]


def _status(probe: LedgerProbe, request_id: str) -> str | None:
    reservation = probe.reservation(request_id)
    return reservation.status.value if reservation is not None else None


def _wait_for(predicate: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.05)
    return False


def test_first_chunk_arrives_before_upstream_finishes(node: ServedNode, funded_key: str, echo: EchoUpstream) -> None:
    with openai.OpenAI(base_url=node.base_url, api_key=funded_key, max_retries=0) as client:
        stream = client.chat.completions.create(
            model="echo/echo-1",
            messages=[{"role": "user", "content": "slow words"}],
            stream=True,
            extra_body={"echo": {"chunks": 20, "delay_ms": 100}},
        )
        first = next(iter(stream))
        finished_when_first_arrived = echo.completed_streams
        rest = list(stream)

    assert first.choices[0].delta.role == "assistant"
    assert finished_when_first_arrived == 0
    assert rest[-1].usage is not None
    assert extra(rest[-1].usage)["cost"]["total_msats"] > 0


def test_stream_relays_sse_headers_drops_comments_and_ends_with_cost_then_done(
    node: ServedNode, funded_key: str
) -> None:
    with httpx.stream(
        "POST",
        node.base_url + "/chat/completions",
        json=_stream_body(3, 0, comments=True),
        headers={"authorization": f"Bearer {funded_key}"},
    ) as response:
        raw = response.read().decode()

    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "OPENROUTER PROCESSING" not in raw
    data = _data_lines(raw)
    assert data[-1] == "[DONE]"
    assert data.count("[DONE]") == 1
    cost_chunk = json.loads(data[-2])
    assert cost_chunk["choices"] == []
    assert cost_chunk["usage"]["cost_sats"] >= 1
    assert all("usage" not in json.loads(d) or json.loads(d)["usage"] is None for d in data[:-2])


def test_stream_break_sends_error_event_and_bills_the_estimate(
    node: ServedNode, funded_key: str, probe: LedgerProbe
) -> None:
    before = probe.key(funded_key).balance.value

    with httpx.stream(
        "POST",
        node.base_url + "/chat/completions",
        json=_stream_body(10, 0, break_after=4),
        headers={"authorization": f"Bearer {funded_key}"},
    ) as response:
        raw = response.read().decode()

    data = _data_lines(raw)
    errors = [json.loads(d) for d in data if d.startswith('{"error"')]
    assert len(errors) == 1
    assert errors[0]["request_id"] == response.headers["x-routstr-request-id"]
    cost = json.loads(data[-2])["usage"]["cost"]
    assert cost["estimated"] is True
    assert before - probe.key(funded_key).balance.value == cost["total_msats"] >= 1


def test_client_disconnect_mid_stream_is_billed_from_drained_usage(
    node: ServedNode, funded_key: str, probe: LedgerProbe, echo: EchoUpstream
) -> None:
    before = probe.key(funded_key).balance.value

    with httpx.stream(
        "POST",
        node.base_url + "/chat/completions",
        json=_stream_body(20, 50),
        headers={"authorization": f"Bearer {funded_key}"},
    ) as response:
        request_id = response.headers["x-routstr-request-id"]
        for _ in response.iter_bytes():
            break  # leave after the first bytes

    assert _wait_for(lambda: echo.completed_streams == 1, 10)
    assert _wait_for(lambda: _status(probe, request_id) == "charged", 10)
    expected = charge_for(Usage(input=6, output=20), ECHO_1, PricingPolicy(fees=FeeSchedule()), RATE).total.value
    assert before - probe.key(funded_key).balance.value == expected


def test_client_disconnect_without_drain_time_is_billed_an_estimate(
    sqlite_database_url: str, echo: EchoUpstream, probe: LedgerProbe
) -> None:
    key = probe.create_key(10_000_000)
    settings = node_settings(sqlite_database_url, echo.base_url, STREAM_DRAIN_SECONDS="0")

    with ServedNode(settings) as node:
        with httpx.stream(
            "POST",
            node.base_url + "/chat/completions",
            json=_stream_body(40, 50),
            headers={"authorization": f"Bearer {key}"},
        ) as response:
            request_id = response.headers["x-routstr-request-id"]
            for _ in response.iter_bytes():
                break
        charged = _wait_for(
            lambda: (r := probe.reservation(request_id)) is not None and r.status.value == "charged", 10
        )

    assert charged
    reservation = probe.reservation(request_id)
    assert reservation is not None
    assert reservation.charged is not None
    assert reservation.charged.value >= 1
    assert echo.completed_streams == 0  # the upstream was not read to its end


def test_stream_longer_than_the_lease_is_kept_alive_by_the_heartbeat(
    sqlite_database_url: str, echo: EchoUpstream, probe: LedgerProbe
) -> None:
    key = probe.create_key(10_000_000)
    settings = node_settings(sqlite_database_url, echo.base_url, RESERVATION_LEASE_SECONDS="2")

    with (
        ServedNode(settings) as node,
        openai.OpenAI(base_url=node.base_url, api_key=key, max_retries=0, timeout=30) as client,
    ):
        raw = client.chat.completions.with_raw_response.create(
            model="echo/echo-1",
            messages=[{"role": "user", "content": "long"}],
            stream=True,
            extra_body={"echo": {"chunks": 30, "delay_ms": 200}},
        )
        request_id = raw.headers["x-routstr-request-id"]
        chunks = list(raw.parse())

    reservation = probe.reservation(request_id)
    assert reservation is not None
    assert reservation.status.value == "charged"
    assert 10_000_000 - probe.key(key).balance.value == extra(chunks[-1].usage)["cost"]["total_msats"]


def test_killed_instance_reservation_expires_and_late_settlement_still_charges(
    tmp_path: Path, sqlite_database_url: str, echo: EchoUpstream, probe: LedgerProbe
) -> None:
    key = probe.create_key(10_000_000)
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
        "DATABASE_URL": sqlite_database_url,
        "UPSTREAM_BASE_URL": echo.base_url,
        "CASHU_MINTS": "http://127.0.0.1:3338",
        "BTC_USD_PRICE": "100000",
        "RESERVATION_LEASE_SECONDS": "2",
        "RELAYS": "ws://127.0.0.1:1",
        "LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "app.infrastructure.app:create_app_from_env"]
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [*command, "--host", "127.0.0.1", "--port", str(port)], env=env
    )
    try:
        assert _wait_for(lambda: port_open("127.0.0.1", port), 20)
        with httpx.stream(
            "POST",
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json=_stream_body(200, 100),
            headers={"authorization": f"Bearer {key}"},
        ) as response:
            request_id = response.headers["x-routstr-request-id"]
            for _ in response.iter_bytes():
                break
            process.send_signal(signal.SIGKILL)
            process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    held = probe.key(key).reserved.value

    with ServedNode(node_settings(sqlite_database_url, echo.base_url, RESERVATION_LEASE_SECONDS="2")):
        expired = _wait_for(
            lambda: (r := probe.reservation(request_id)) is not None and r.status.value == "expired", 10
        )
    settlement = probe.settle(request_id, 5_000)

    assert held > 0
    assert expired
    assert probe.key(key).reserved.value == 0
    assert settlement.collected.value == 5_000
    assert 10_000_000 - probe.key(key).balance.value == 5_000
