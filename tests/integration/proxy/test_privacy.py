"""Privacy (SPEC §18 scenario 22): the upstream sees only allow-listed headers; logs carry no keys or prompts."""

import io
import re
from collections.abc import Iterator

import httpx
import pytest

from app.infrastructure.logging import configure_logging
from tests.support.echo_upstream import EchoUpstream
from tests.support.node import LedgerProbe, ServedNode, node_settings

PROMPT = "my very private prompt 4711"
CLIENT_HEADERS = {
    "cookie": "session=abc",
    "x-forwarded-for": "203.0.113.9",
    "x-forwarded-proto": "https",
    "forwarded": "for=203.0.113.9",
    "x-real-ip": "203.0.113.9",
    "user-agent": "client-agent/1.0",  # X-Cashu is a credential now: see payments/test_xcashu.py
    "refund-lnurl": "someone@example.com",
    "key-expiry-time": "1999999999",
    "openai-beta": "assistants=v2",
}


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    configure_logging("DEBUG", stream=buffer)
    yield buffer
    configure_logging("INFO")


def test_upstream_sees_only_allow_listed_headers_and_logs_hold_no_secrets(
    sqlite_database_url: str, probe: LedgerProbe, log_buffer: io.StringIO
) -> None:
    key = probe.create_key(10_000_000)
    with EchoUpstream(api_key="upstream-secret") as echo:
        settings = node_settings(sqlite_database_url, echo.base_url, UPSTREAM_API_KEY="upstream-secret")
        with ServedNode(settings) as node:
            headers = {**CLIENT_HEADERS, "authorization": f"Bearer {key}"}
            body = {"model": "echo/echo-1", "messages": [{"role": "user", "content": PROMPT}]}
            plain = httpx.post(node.base_url + "/chat/completions", json=body, headers=headers)
            streamed = httpx.post(node.base_url + "/chat/completions", json={**body, "stream": True}, headers=headers)
        posts = [r for r in echo.received if r.method == "POST"]

    assert (plain.status_code, streamed.status_code) == (200, 200)
    assert len(posts) == 2
    for received in posts:
        names = set(received.headers)
        assert received.headers["authorization"] == "Bearer upstream-secret"
        assert received.headers["user-agent"] == "routstr-core/0.1.0"
        assert received.headers["openai-beta"] == "assistants=v2"
        assert not names & {"cookie", "x-forwarded-for", "x-forwarded-proto", "forwarded", "x-real-ip", "x-cashu"}
        assert not names & {"refund-lnurl", "key-expiry-time"}
        assert key not in str(received.headers)
    logs = log_buffer.getvalue()
    assert "request_completed" in logs
    assert PROMPT not in logs
    assert key not in logs
    assert re.search(r"sk-[0-9a-f]{16,}", logs) is None
    assert "cashuB" not in logs
    assert "upstream-secret" not in logs
