"""Log redaction: no Cashu token, `sk-` key, creq or nsec reaches a log line."""

import io
import json

import pytest
import structlog

from app.infrastructure.logging import configure_logging, redact_secrets

TOKEN_A = "cashuAeyJ0b2tlbiI6W3sibWludCI6Imh0dHA6Ly9sb2NhbGhvc3QiLCJwcm9vZnMiOltdfV19"  # noqa: S105 - test data, not a credential
TOKEN_B = "cashuBo2FteBtodHRwczovL21pbnQuZXhhbXBsZS5jb21hdWNzYXQ"  # noqa: S105 - test data, not a credential
KEY = "sk-" + "ab12" * 16
NSEC = "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5"


@pytest.mark.parametrize("secret", [TOKEN_A, TOKEN_B, "cashu:" + TOKEN_B, KEY, NSEC, "creqApGFhGGRhdWNzYXQ="])
def test_redact_secrets_masks_secret_looking_strings_anywhere(secret: str) -> None:
    event = {"event": f"saw {secret} here", "nested": {"list": [f"x {secret}"]}}

    redacted = redact_secrets(None, "info", event)

    assert secret not in json.dumps(redacted)
    assert "[redacted]" in redacted["event"]


@pytest.mark.parametrize("field", ["token", "api_key", "authorization", "password", "nsec", "cashu_token", "x_cashu"])
def test_redact_secrets_drops_secret_named_fields(field: str) -> None:
    redacted = redact_secrets(None, "info", {"event": "e", field: "harmless-looking"})

    assert field not in redacted


def test_redact_secrets_keeps_token_counts() -> None:
    redacted = redact_secrets(None, "info", {"event": "e", "prompt_tokens": 3, "completion_tokens": 4})

    assert redacted["prompt_tokens"] == 3
    assert redacted["completion_tokens"] == 4


def test_configure_logging_writes_redacted_json_lines() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    structlog.contextvars.bind_contextvars(request_id="r-1")

    structlog.get_logger("test").info("key_used", detail=f"bearer {KEY}", api_key=KEY, amount_msat=5)
    structlog.contextvars.clear_contextvars()

    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["event"] == "key_used"
    assert line["request_id"] == "r-1"
    assert line["amount_msat"] == 5
    assert "api_key" not in line
    assert KEY not in stream.getvalue()
    assert line["level"] == "info"
