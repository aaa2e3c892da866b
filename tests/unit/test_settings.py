"""Settings: SPEC §2 names and defaults, exact decimal parsing, one-line errors that never echo secrets."""

import json
from pathlib import Path

import pytest

from app.infrastructure.settings import SettingsError, load_settings, normalize_mint_url

MINT = {"CASHU_MINTS": "http://127.0.0.1:3338"}


def test_load_settings_uses_spec_defaults() -> None:
    settings = load_settings(MINT)

    assert settings.database_url == "sqlite+aiosqlite:///routstr.db"
    assert settings.exchange_fee_ppm == 1_005_000
    assert settings.upstream_provider_fee_ppm == 1_050_000
    assert settings.min_request_msat == 1
    assert settings.tolerance_ppm == 10_000
    assert settings.fixed_cost_per_request_msat == 1000
    assert settings.reservation_lease_seconds == 60
    assert settings.price_sources == ("kraken", "coinbase", "binance")
    assert settings.relays[0] == "wss://relay.nostr.band"
    assert settings.primary_mint_url == "http://127.0.0.1:3338"
    assert settings.primary_mint_unit == "sat"


@pytest.mark.parametrize(
    ("name", "value", "field", "expected"),
    [
        ("EXCHANGE_FEE", "1.01", "exchange_fee_ppm", 1_010_000),
        ("UPSTREAM_PROVIDER_FEE", "1.0000001", "upstream_provider_fee_ppm", 1_000_001),
        ("FIXED_COST_PER_REQUEST", "0.5", "fixed_cost_per_request_msat", 500),
        ("FIXED_PER_1K_INPUT_TOKENS", "0.0015", "fixed_per_1k_input_tokens_msat", 2),
        ("TOLERANCE_PERCENTAGE", "2.5", "tolerance_ppm", 25_000),
        ("BTC_USD_PRICE", "100000", "btc_usd_price_micro", 100_000_000_000),
        ("WORKERS", "1", "workers", 1),
        ("FIXED_PRICING", "true", "fixed_pricing", True),
    ],
)
def test_load_settings_parses_decimals_exactly_rounding_charges_up(
    name: str, value: str, field: str, expected: object
) -> None:
    settings = load_settings({**MINT, name: value})

    assert getattr(settings, field) == expected


def test_load_settings_normalizes_mint_urls_and_puts_primary_first() -> None:
    settings = load_settings({"CASHU_MINTS": "HTTP://Mint.Example.com/, https://b.example", "PRIMARY_MINT_URL": ""})

    assert settings.trusted_mints == ("http://mint.example.com", "https://b.example")


def test_load_settings_adds_explicit_primary_to_trusted_mints() -> None:
    settings = load_settings({**MINT, "PRIMARY_MINT_URL": "https://primary.example/"})

    assert settings.trusted_mints == ("https://primary.example", "http://127.0.0.1:3338")


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({}, "CASHU_MINTS"),
        ({**MINT, "PORT": "eighty"}, "PORT"),
        ({**MINT, "EXCHANGE_FEE": "0.9"}, "EXCHANGE_FEE"),
        ({**MINT, "DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({**MINT, "WORKERS": "2"}, "WORKERS"),
        ({**MINT, "RELAYS": "ws://relay.example.com"}, "RELAYS"),
        ({**MINT, "PRIMARY_MINT_UNIT": "usd"}, "PRIMARY_MINT_UNIT"),
        ({**MINT, "BTC_USD_PRICE": "12"}, "BTC_USD_PRICE"),
        ({**MINT, "TOLERANCE_PERCENTAGE": "100"}, "TOLERANCE_PERCENTAGE"),
        ({**MINT, "FIXED_PRICING": "maybe"}, "FIXED_PRICING"),
    ],
)
def test_load_settings_names_the_bad_variable(environ: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ)

    message = str(caught.value)
    assert message.startswith(names + ":")
    assert "\n" not in message


def test_load_settings_allows_loopback_ws_relays() -> None:
    settings = load_settings({**MINT, "RELAYS": "ws://127.0.0.1:7777, wss://relay.example.com"})

    assert settings.relays == ("ws://127.0.0.1:7777", "wss://relay.example.com")


def test_normalize_mint_url_rejects_non_http() -> None:
    with pytest.raises(ValueError, match="http"):
        normalize_mint_url("ftp://mint")


def test_load_settings_resolves_provider_api_key_env_names(tmp_path: Path) -> None:
    providers = tmp_path / "providers.json"
    providers.write_text(json.dumps({"providers": [{"id": "or", "type": "openrouter", "api_key_env": "OR_KEY"}]}))

    settings = load_settings({**MINT, "PROVIDERS_PATH": str(providers), "OR_KEY": "secret-value"})

    assert settings.provider_api_keys == {"OR_KEY": "secret-value"}


def test_load_settings_stops_when_a_provider_key_variable_is_missing(tmp_path: Path) -> None:
    providers = tmp_path / "providers.json"
    providers.write_text(json.dumps({"providers": [{"id": "or", "type": "openrouter", "api_key_env": "OR_KEY"}]}))

    with pytest.raises(SettingsError, match=r"^OR_KEY: required by PROVIDERS_PATH"):
        load_settings({**MINT, "PROVIDERS_PATH": str(providers)})


def test_load_settings_never_echoes_a_bad_secret() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**MINT, "NSEC": "nsec1notreallyasecretbutsecretshaped"})

    assert str(caught.value).startswith("NSEC:")
    assert "notreally" not in str(caught.value)
