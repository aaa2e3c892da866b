"""Client headers an upstream may see (SPEC §8.3) and which statuses fail over."""

import pytest

from app.domain.upstream import fails_over, forwardable_headers


def test_forwardable_headers_keep_only_the_allow_list_lowercased() -> None:
    client = [
        ("Content-Type", "application/json"),
        ("Accept", "text/event-stream"),
        ("OpenAI-Beta", "assistants=v2"),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "tools"),
        ("Authorization", "Bearer sk-secret"),
        ("Cookie", "a=b"),
        ("X-Cashu", "cashuBxyz"),
        ("Refund-LNURL", "me@example.com"),
        ("Key-Expiry-Time", "1"),
        ("X-Forwarded-For", "203.0.113.1"),
        ("Forwarded", "for=203.0.113.1"),
        ("User-Agent", "curl/8"),
        ("X-Real-IP", "203.0.113.1"),
    ]

    kept = forwardable_headers(client)

    assert kept == (
        ("content-type", "application/json"),
        ("accept", "text/event-stream"),
        ("openai-beta", "assistants=v2"),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "tools"),
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, True),
        (403, True),
        (404, True),
        (408, True),
        (429, True),
        (500, True),
        (503, True),
        (400, False),
        (413, False),
        (422, False),
    ],
)
def test_fails_over_on_spec_statuses_only(status: int, expected: bool) -> None:
    assert fails_over(status) is expected
