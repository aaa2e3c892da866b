"""Cashu: our own async client (NUT-00..12, 18) on httpx, coincurve and cbor2."""
