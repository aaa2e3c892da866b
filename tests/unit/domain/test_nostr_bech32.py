"""NIP-19 bech32 keys against the examples published in the NIP."""

import pytest

from app.domain.nostr_bech32 import (
    Bech32Error,
    bech32_decode,
    npub_decode,
    npub_encode,
    nsec_decode,
    nsec_encode,
    parse_public_key,
    parse_secret_key,
)

# NIP-19 "Examples" section.
NIP19_NPUB = "npub10elfcs4fr0l0r8af98jlmgdh9c8tcxjvz9qkw038js35mp4dma8qzvjptg"
NIP19_PUBLIC_HEX = "7e7e9c42a91bfef19fa929e5fda1b72e0ebc1a4c1141673e2794234d86addf4e"
NIP19_NSEC = "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5"
NIP19_NSEC_HEX = "67dea2ed018072d675f5415ecfaed7d2597555e202d85b3d65ea4e58d2d92ffa"


def test_npub_encode_matches_nip19_example() -> None:
    assert npub_encode(NIP19_PUBLIC_HEX) == NIP19_NPUB


def test_npub_decode_matches_nip19_example() -> None:
    assert npub_decode(NIP19_NPUB) == NIP19_PUBLIC_HEX


def test_nsec_encode_matches_nip19_example() -> None:
    assert nsec_encode(NIP19_NSEC_HEX) == NIP19_NSEC


def test_nsec_decode_matches_nip19_example() -> None:
    assert nsec_decode(NIP19_NSEC) == NIP19_NSEC_HEX


def test_npub_decode_accepts_uppercase() -> None:
    assert npub_decode(NIP19_NPUB.upper()) == NIP19_PUBLIC_HEX


@pytest.mark.parametrize(
    "text",
    [
        NIP19_NPUB[:-1] + ("q" if NIP19_NPUB[-1] != "q" else "p"),  # checksum broken
        NIP19_NPUB[:10] + NIP19_NPUB[10:].upper(),  # mixed case
        NIP19_NPUB.replace("0", "b", 1),  # 'b' is not in the charset
        NIP19_NSEC,  # wrong prefix
        "npub1",  # too short
        "",
    ],
)
def test_npub_decode_raises_when_text_is_not_an_npub(text: str) -> None:
    with pytest.raises(Bech32Error):
        npub_decode(text)


def test_bech32_decode_returns_prefix_and_payload() -> None:
    prefix, payload = bech32_decode(NIP19_NSEC)

    assert (prefix, payload.hex()) == ("nsec", NIP19_NSEC_HEX)


@pytest.mark.parametrize("text", [NIP19_NSEC, NIP19_NSEC_HEX, NIP19_NSEC_HEX.upper(), f"  {NIP19_NSEC}\n"])
def test_parse_secret_key_accepts_nsec_and_hex(text: str) -> None:
    assert parse_secret_key(text).hex() == NIP19_NSEC_HEX


@pytest.mark.parametrize(
    "text",
    [
        "00" * 32,  # zero is not a key
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",  # the curve order
        "ab" * 31,  # too short
        "zz" * 32,
        "ab " * 32,  # bytes.fromhex would accept the spaces
        NIP19_NPUB,
        NIP19_NSEC[:-2],
    ],
)
def test_parse_secret_key_raises_when_text_is_not_a_key(text: str) -> None:
    with pytest.raises(Bech32Error) as raised:
        parse_secret_key(text)

    assert text.strip() not in str(raised.value)


@pytest.mark.parametrize("text", [NIP19_NPUB, NIP19_PUBLIC_HEX, NIP19_PUBLIC_HEX.upper()])
def test_parse_public_key_accepts_npub_and_hex(text: str) -> None:
    assert parse_public_key(text) == NIP19_PUBLIC_HEX
