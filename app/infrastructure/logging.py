"""Structured JSON logging with a redaction processor that keeps secrets out of every event."""

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Final

import structlog

SECRET_FIELD: Final = re.compile(
    r"token|api_key|apikey|authorization|password|nsec|secret|cookie|x_cashu", re.IGNORECASE
)
SECRET_VALUE: Final = re.compile(
    r"(cashu:)?cashu[AB][A-Za-z0-9_\-+/=]+|sk-[0-9a-fA-F]{8,}|nsec1[02-9ac-hj-np-z]+|creqA[A-Za-z0-9_\-+/=]+"
)
MASK: Final = "[redacted]"
# Fields that merely mention a token by name but carry no secret (counts, ids, amounts).
_ALLOWED_FIELDS: Final = frozenset({"prompt_tokens", "completion_tokens", "total_tokens", "token_hash_prefix"})


def _scrub(value: object) -> object:
    if isinstance(value, str):
        return SECRET_VALUE.sub(MASK, value)
    if isinstance(value, Mapping):
        return {k: _scrub(v) for k, v in value.items() if not _is_secret_field(str(k))}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _is_secret_field(name: str) -> bool:
    return name not in _ALLOWED_FIELDS and SECRET_FIELD.search(name) is not None


def redact_secrets(_logger: object, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Drop secret-named fields and mask anything that looks like a Cashu token, `sk-` key, creq or nsec."""
    for name in [k for k in event_dict if _is_secret_field(k)]:
        del event_dict[name]
    for name, value in event_dict.items():
        event_dict[name] = _scrub(value)
    return event_dict


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Configure structlog once for the process: JSON lines on stdout (or `stream`)."""
    logging.basicConfig(level=level, stream=stream or sys.stdout, format="%(message)s", force=True)
    for noisy in ("uvicorn.access", "httpx", "httpcore", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
