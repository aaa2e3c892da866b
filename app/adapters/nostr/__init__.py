"""Nostr adapters: BIP-340 keys with coincurve and relays over websockets."""

from app.adapters.nostr.keys import SecpEventSigner, SecpSignatureVerifier
from app.adapters.nostr.relay import WebsocketRelay

__all__ = ["SecpEventSigner", "SecpSignatureVerifier", "WebsocketRelay"]
