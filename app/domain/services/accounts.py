"""Account use cases: who is calling, and what their key holds."""

from dataclasses import dataclass

from app.domain.accounts import ApiKey, hash_api_key, looks_like_api_key, normalize_api_key
from app.domain.errors import InvalidApiKeyError, MissingApiKeyError
from app.domain.ports import Clock, Ledger
from app.domain.services.payments import RedemptionService
from app.domain.wallet import looks_like_token, token_api_key


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
    def __init__(self, ledger: Ledger, clock: Clock, redemption: RedemptionService | None = None) -> None:
        self._ledger = ledger
        self._clock = clock
        self._redemption = redemption

    async def authenticate(self, authorization: str | None) -> Caller:
        """Resolve `Bearer sk-…` to its key, and `Bearer cashuA…|cashuB…` to the key `sk-`+sha256_hex(token).

        A token whose key exists is used without decoding it; otherwise it is redeemed into that new key (SPEC §6),
        raising the errors of RedemptionService.redeem. Raises MissingApiKeyError without a credential and
        InvalidApiKeyError for a malformed or unknown key.
        """
        credential = bearer_credential(authorization)
        if credential is None:
            msg = "No API key given; send 'Authorization: Bearer sk-…'"
            raise MissingApiKeyError(msg)
        if looks_like_token(credential):
            return await self._token_as_key(credential)
        if not looks_like_api_key(credential):
            msg = "The API key is malformed"
            raise InvalidApiKeyError(msg)
        presented = normalize_api_key(credential)
        key = await self._ledger.get_key(hash_api_key(presented))
        if key is None:
            msg = "The API key is unknown"
            raise InvalidApiKeyError(msg)
        return Caller(key=key, presented_key=presented)

    async def _token_as_key(self, token: str) -> Caller:
        api_key = token_api_key(token)
        key_hash = hash_api_key(api_key)
        key = await self._ledger.get_key(key_hash)
        if key is None:
            if self._redemption is None:
                msg = "Cashu tokens are not accepted as API keys here"
                raise InvalidApiKeyError(msg)
            key = (await self._redemption.redeem(token, key_hash=key_hash)).key
        return Caller(key=key, presented_key=api_key)
