"""Account use cases: who is calling, and what their key holds."""

from dataclasses import dataclass

from app.domain.accounts import ApiKey, hash_api_key, looks_like_api_key, normalize_api_key
from app.domain.errors import InvalidApiKeyError, MissingApiKeyError
from app.domain.ports import Clock, Ledger


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated key and the key string the client presented (echoed back, never stored)."""

    key: ApiKey
    presented_key: str


def bearer_credential(authorization: str | None) -> str | None:
    """The credential of an `Authorization: Bearer <x>` header, or None when absent or empty."""
    if not authorization:
        return None
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return None
    return credential.strip()


class AccountService:
    def __init__(self, ledger: Ledger, clock: Clock) -> None:
        self._ledger = ledger
        self._clock = clock

    async def authenticate(self, authorization: str | None) -> Caller:
        """Resolve `Bearer sk-…` to its key.

        Raises MissingApiKeyError without a credential and InvalidApiKeyError for a malformed or unknown key.
        """
        credential = bearer_credential(authorization)
        if credential is None:
            msg = "No API key given; send 'Authorization: Bearer sk-…'"
            raise MissingApiKeyError(msg)
        if not looks_like_api_key(credential):
            msg = "The API key is malformed"
            raise InvalidApiKeyError(msg)
        presented = normalize_api_key(credential)
        key = await self._ledger.get_key(hash_api_key(presented))
        if key is None:
            msg = "The API key is unknown"
            raise InvalidApiKeyError(msg)
        return Caller(key=key, presented_key=presented)
