"""NSEC and RELAYS parsing: a bad key stops startup naming NSEC, never echoing it; relays are wss or loopback ws."""

import pytest

from app.infrastructure.settings import SettingsError, load_settings

NIP19_NSEC = "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5"
NIP19_NSEC_HEX = "67dea2ed018072d675f5415ecfaed7d2597555e202d85b3d65ea4e58d2d92ffa"
BASE = {"CASHU_MINTS": "https://mint.example"}


@pytest.mark.parametrize("value", [NIP19_NSEC, NIP19_NSEC_HEX, NIP19_NSEC_HEX.upper()])
def test_load_settings_normalizes_nsec_to_hex(value: str) -> None:
    settings = load_settings({**BASE, "NSEC": value})

    assert settings.nsec == NIP19_NSEC_HEX


@pytest.mark.parametrize(
    "value",
    [
        NIP19_NSEC[:-1] + "x",
        "00" * 32,
        NIP19_NSEC_HEX[:-2],
        "npub10elfcs4fr0l0r8af98jlmgdh9c8tcxjvz9qkw038js35mp4dma8qzvjptg",
    ],
    ids=["bad-checksum", "zero", "short-hex", "npub"],
)
def test_load_settings_raises_naming_nsec_without_value_when_nsec_is_invalid(value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({**BASE, "NSEC": value})

    message = str(raised.value)
    assert message.startswith("NSEC:")
    assert value not in message
    assert value[5:20] not in message


def test_load_settings_leaves_nsec_unset_when_absent() -> None:
    assert load_settings(BASE).nsec is None


@pytest.mark.parametrize("value", ["ws://relay.example", "https://relay.example", "relay.example"])
def test_load_settings_raises_naming_relays_when_relay_url_is_malformed(value: str) -> None:
    with pytest.raises(SettingsError, match=r"^RELAYS:"):
        load_settings({**BASE, "RELAYS": f"wss://ok.example,{value}"})


def test_load_settings_accepts_loopback_ws_relay() -> None:
    settings = load_settings({**BASE, "RELAYS": "ws://127.0.0.1:7777,wss://relay.example"})

    assert settings.relays == ("ws://127.0.0.1:7777", "wss://relay.example")
