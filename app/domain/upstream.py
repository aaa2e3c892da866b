"""What is sent to an upstream and which client headers may go with it (SPEC §8.2, §8.3)."""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

# The only client headers that reach an upstream; everything else (auth, cookies, X-Cashu, x-forwarded-*, UA, IP)
# stays at the node.
ALLOWED_CLIENT_HEADERS: Final = frozenset(
    {"content-type", "accept", "openai-beta", "anthropic-version", "anthropic-beta"}
)

# Upstream statuses that move on to the next candidate (before the first byte only); 400/413/422 are returned as-is.
FAILOVER_STATUSES: Final = frozenset({401, 403, 404, 408, 429})


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """A POST to `base_url + path` (path without `/v1`, e.g. `/chat/completions`) with an opaque JSON `body`.

    `headers` are client headers already filtered by `forwardable_headers`; the adapter adds its own credential
    and user agent.
    """

    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def forwardable_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The allow-listed subset of the client's headers, names lowercased."""
    return tuple((name.lower(), value) for name, value in headers if name.lower() in ALLOWED_CLIENT_HEADERS)


def fails_over(status: int) -> bool:
    """Whether an upstream status lets the next candidate try (SPEC §8.3)."""
    return status in FAILOVER_STATUSES or status >= 500  # noqa: PLR2004 - every 5xx
