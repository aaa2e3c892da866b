"""EventSigner and SignatureVerifier fakes: a keyed-hash 'signature' that only the fake verifier accepts."""

import hashlib


def _fake_signature(public_key: str, event_id: str) -> str:
    return hashlib.sha512(f"{public_key}:{event_id}".encode()).hexdigest()


class FakeEventSigner:
    """Signs with sha512(pubkey:id); records every id it signed in `signed`."""

    def __init__(self, public_key: str = "ab" * 32) -> None:
        self._public_key = public_key
        self.signed: list[str] = []

    @property
    def public_key(self) -> str:
        return self._public_key

    def sign(self, event_id: str) -> str:
        self.signed.append(event_id)
        return _fake_signature(self._public_key, event_id)


class FakeSignatureVerifier:
    """Accepts exactly the signatures FakeEventSigner makes; `reject_all` turns every check false."""

    def __init__(self) -> None:
        self.reject_all = False
        self.checked: list[str] = []

    def verify(self, public_key: str, event_id: str, signature: str) -> bool:
        self.checked.append(event_id)
        return not self.reject_all and signature == _fake_signature(public_key, event_id)
