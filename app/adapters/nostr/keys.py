"""BIP-340 Schnorr signing and verification on secp256k1 with coincurve (libsecp256k1 bindings)."""

import secrets
from collections.abc import Callable

import coincurve


class SecpEventSigner:
    """Signs event ids with the node's secret key. The key is kept out of repr and logs."""

    __slots__ = ("_aux", "_key", "_public_key")

    def __init__(self, secret_key: bytes, *, aux_randomness: Callable[[], bytes] | None = None) -> None:
        """Raises ValueError when `secret_key` is not a valid 32-byte secp256k1 scalar.

        `aux_randomness` yields BIP-340's 32 auxiliary random bytes per signature (fresh from `secrets` by default;
        tests pass the published vectors' values).
        """
        if len(secret_key) != 32:  # noqa: PLR2004 - coincurve would left-pad a short key
            msg = "a secp256k1 secret key is 32 bytes"
            raise ValueError(msg)
        self._aux = aux_randomness or _fresh_aux
        self._key = coincurve.PrivateKey(secret_key)
        self._public_key: str = coincurve.PublicKeyXOnly.from_secret(secret_key).format().hex()

    def __repr__(self) -> str:
        return f"SecpEventSigner(public_key={self._public_key!r})"

    @property
    def public_key(self) -> str:
        return self._public_key

    def sign(self, event_id: str) -> str:
        signature: bytes = self._key.sign_schnorr(bytes.fromhex(event_id), self._aux())
        return signature.hex()


def _fresh_aux() -> bytes:
    return secrets.token_bytes(32)


class SecpSignatureVerifier:
    """Checks BIP-340 signatures; anything that does not parse is reported as invalid."""

    def verify(self, public_key: str, event_id: str, signature: str) -> bool:
        try:
            key = coincurve.PublicKeyXOnly(bytes.fromhex(public_key))
            message, sig = bytes.fromhex(event_id), bytes.fromhex(signature)
        except ValueError:
            return False
        if len(message) != 32 or len(sig) != 64:  # noqa: PLR2004 - BIP-340 sizes
            return False
        try:
            return bool(key.verify(sig, message))
        except ValueError:
            return False
