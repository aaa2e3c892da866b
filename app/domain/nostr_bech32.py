"""NIP-19 bech32 keys: npub/nsec encoding and decoding (BIP-173 bech32, 32-byte payloads)."""

from typing import Final

CHARSET: Final = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR: Final = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
# Secret keys are scalars in [1, n-1] of secp256k1 (BIP-340).
CURVE_ORDER: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
KEY_BYTES: Final = 32
MAX_BECH32_LENGTH: Final = 90


class Bech32Error(ValueError):
    """Text that is not a valid bech32 string of the expected prefix and length."""


def _polymod(values: list[int]) -> int:
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for i, generator in enumerate(_GENERATOR):
            if (top >> i) & 1:
                checksum ^= generator
    return checksum


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, *, pad: bool) -> list[int]:
    accumulator = 0
    bits = 0
    out: list[int] = []
    max_value = (1 << to_bits) - 1
    for value in data:
        if value < 0 or value >> from_bits:
            msg = "invalid data value"
            raise Bech32Error(msg)
        accumulator = (accumulator << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((accumulator >> bits) & max_value)
    if pad:
        if bits:
            out.append((accumulator << (to_bits - bits)) & max_value)
    elif bits >= from_bits or ((accumulator << (to_bits - bits)) & max_value):
        msg = "invalid padding"
        raise Bech32Error(msg)
    return out


def bech32_encode(hrp: str, payload: bytes) -> str:
    data = _convert_bits(payload, 8, 5, pad=True)
    polymod = _polymod([*_hrp_expand(hrp), *data, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(CHARSET[d] for d in data + checksum)


def bech32_decode(text: str) -> tuple[str, bytes]:
    """(prefix, payload) of a bech32 string. Raises Bech32Error for bad characters, case mix or checksum."""
    if len(text) > MAX_BECH32_LENGTH or any(ord(c) < 33 or ord(c) > 126 for c in text):  # noqa: PLR2004
        msg = "not a bech32 string"
        raise Bech32Error(msg)
    if text.lower() != text and text.upper() != text:
        msg = "mixed case"
        raise Bech32Error(msg)
    lowered = text.lower()
    separator = lowered.rfind("1")
    if separator < 1 or separator + 7 > len(lowered):
        msg = "missing separator or checksum"
        raise Bech32Error(msg)
    hrp = lowered[:separator]
    try:
        data = [CHARSET.index(c) for c in lowered[separator + 1 :]]
    except ValueError:
        msg = "invalid character"
        raise Bech32Error(msg) from None
    if _polymod([*_hrp_expand(hrp), *data]) != 1:
        msg = "bad checksum"
        raise Bech32Error(msg)
    return hrp, bytes(_convert_bits(data[:-6], 5, 8, pad=False))


def _decode_key(text: str, hrp: str) -> bytes:
    prefix, payload = bech32_decode(text.strip())
    if prefix != hrp or len(payload) != KEY_BYTES:
        msg = f"not an {hrp} key"
        raise Bech32Error(msg)
    return payload


def _key_bytes(hex_key: str) -> bytes:
    if len(hex_key) != 2 * KEY_BYTES or any(c not in "0123456789abcdefABCDEF" for c in hex_key):
        msg = "key is not 64 hex characters"
        raise Bech32Error(msg)
    return bytes.fromhex(hex_key)


def npub_encode(public_key_hex: str) -> str:
    """The npub of a 32-byte x-only public key given as hex."""
    return bech32_encode("npub", _key_bytes(public_key_hex))


def npub_decode(npub: str) -> str:
    """The x-only public key (lowercase hex) of an npub. Raises Bech32Error."""
    return _decode_key(npub, "npub").hex()


def nsec_encode(secret_key_hex: str) -> str:
    return bech32_encode("nsec", _key_bytes(secret_key_hex))


def nsec_decode(nsec: str) -> str:
    """The secret key (lowercase hex) of an nsec. Raises Bech32Error."""
    return _decode_key(nsec, "nsec").hex()


def parse_secret_key(text: str) -> bytes:
    """A secret key from `nsec1…` or 64 hex characters, checked to be a valid secp256k1 scalar.

    Raises Bech32Error with a message that never contains the key.
    """
    stripped = text.strip()
    raw = bytes.fromhex(nsec_decode(stripped)) if stripped.lower().startswith("nsec1") else _key_bytes(stripped)
    if not 0 < int.from_bytes(raw, "big") < CURVE_ORDER:
        msg = "key is outside the secp256k1 range"
        raise Bech32Error(msg)
    return raw


def parse_public_key(text: str) -> str:
    """An x-only public key as lowercase hex from `npub1…` or 64 hex characters. Raises Bech32Error."""
    stripped = text.strip()
    if stripped.lower().startswith("npub1"):
        return npub_decode(stripped)
    return _key_bytes(stripped).hex()
