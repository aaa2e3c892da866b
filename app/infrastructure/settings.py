"""Settings: the SPEC §2 environment variables, parsed once; the only module that reads the environment."""

import os
from collections.abc import Callable, Mapping
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Final
from urllib.parse import urlsplit

import msgspec

from app.adapters.catalog import CatalogFileError, api_key_env_names, read_json_file
from app.domain.nostr_bech32 import Bech32Error, parse_secret_key

PPM: Final = 1_000_000
MSAT_PER_SAT: Final = 1000
DEFAULT_RELAYS: Final = "wss://relay.nostr.band,wss://relay.damus.io,wss://relay.routstr.com,wss://nos.lol"
SECRET_NAMES: Final = frozenset({"UPSTREAM_API_KEY", "NSEC", "ADMIN_PASSWORD"})


class SettingsError(Exception):
    """A bad configuration value; the message names the variable and never shows a secret."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """The node's configuration. Money is integer msat, fees and rates integer ppm."""

    database_url: str = "sqlite+aiosqlite:///routstr.db"
    upstream_base_url: str | None = None
    upstream_api_key: str | None = None
    providers_path: str | None = None
    models_path: str | None = None
    models_refresh_interval_seconds: int = 360
    cashu_mints: tuple[str, ...] = ()
    primary_mint_url: str = ""
    primary_mint_unit: str = "sat"
    name: str = "ARoutstrNode"
    description: str = "A Routstr Node"
    http_url: str | None = None
    onion_url: str | None = None
    nsec: str | None = None
    relays: tuple[str, ...] = ()
    provider_id: str | None = None
    providers_refresh_interval_seconds: int = 900
    receive_ln_address: str | None = None
    min_payout_sat: int = 210
    payout_interval_seconds: int = 900
    admin_password: str | None = None
    fixed_pricing: bool = False
    fixed_cost_per_request_msat: int = 1000
    fixed_per_1k_input_tokens_msat: int = 0
    fixed_per_1k_output_tokens_msat: int = 0
    exchange_fee_ppm: int = 1_005_000
    upstream_provider_fee_ppm: int = 1_050_000
    min_request_msat: int = 1
    tolerance_ppm: int = 10_000
    child_key_cost_msat: int = 0
    pricing_refresh_interval_seconds: int = 120
    btc_usd_price_micro: int | None = None
    price_sources: tuple[str, ...] = ("kraken", "coinbase", "binance")
    price_max_age_seconds: int = 900
    cors_origins: tuple[str, ...] = ("*",)
    log_level: str = "INFO"
    mint_operation_timeout_seconds: int = 30
    mint_max_concurrency: int = 4
    mint_retry_max_attempts: int = 3
    upstream_timeout_seconds: int = 300
    stream_drain_seconds: int = 30
    reservation_lease_seconds: int = 60
    redis_url: str | None = None
    rate_limit_rpm: int = 0
    allow_private_lnurl: bool = False
    host: str = "0.0.0.0"  # noqa: S104 - a server binds all interfaces by default (SPEC §2)
    port: int = 8000
    workers: int = 1
    provider_api_keys: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def trusted_mints(self) -> tuple[str, ...]:
        """PRIMARY_MINT_URL first, then CASHU_MINTS, without duplicates."""
        return tuple(dict.fromkeys((self.primary_mint_url, *self.cashu_mints)))

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def normalize_mint_url(url: str) -> str:
    """Lowercase scheme and host, no trailing slash (SPEC §2)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        msg = "must be an http(s) URL"
        raise ValueError(msg)
    path = parts.path.rstrip("/")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{path}"


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        msg = "must be a decimal number"
        raise ValueError(msg) from None
    if not value.is_finite():
        msg = "must be a finite decimal number"
        raise ValueError(msg)
    return value


def _scaled(text: str, scale: int, *, minimum: Decimal = Decimal(0)) -> int:
    """An exact decimal times `scale`, rounded up: a fee or price is never undercharged by rounding."""
    value = _decimal(text)
    if value < minimum:
        msg = f"must be at least {minimum}"
        raise ValueError(msg)
    return int((value * scale).to_integral_value(rounding=ROUND_CEILING))


def _int(text: str, *, minimum: int = 0) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        msg = "must be a whole number"
        raise ValueError(msg) from None
    if value < minimum:
        msg = f"must be at least {minimum}"
        raise ValueError(msg)
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    msg = "must be true or false"
    raise ValueError(msg)


def _list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        msg = "must be an http(s) URL"
        raise ValueError(msg)
    return text.strip().rstrip("/")


def _nsec(text: str) -> str:
    """The secret key as 64 lowercase hex characters, from `nsec1…` or hex."""
    try:
        return parse_secret_key(text).hex()
    except Bech32Error:
        msg = "must be an nsec1… key or 64 hex characters of a valid secp256k1 secret key"
        raise ValueError(msg) from None


def _relay(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "wss" and parts.hostname:
        return url
    if parts.scheme == "ws" and parts.hostname in {"127.0.0.1", "localhost", "::1"}:
        return url
    msg = f"{url!r} is not a wss:// URL (ws:// is allowed for loopback only)"
    raise ValueError(msg)


def _database_url(text: str) -> str:
    if not text.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        msg = "must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
        raise ValueError(msg)
    return text


def _unit(text: str) -> str:
    if text not in {"sat", "msat"}:
        msg = "must be sat or msat"
        raise ValueError(msg)
    return text


def _log_level(text: str) -> str:
    upper = text.strip().upper()
    if upper not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        msg = "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
        raise ValueError(msg)
    return upper


def _btc_usd(text: str) -> int:
    micro = _scaled(text, PPM)
    if not 1_000 * PPM <= micro <= 10_000_000 * PPM:
        msg = "must be between 1000 and 10000000 USD"
        raise ValueError(msg)
    return micro


def _tolerance(text: str) -> int:
    ppm = _scaled(text, PPM // 100)
    if ppm >= PPM:
        msg = "must be below 100"
        raise ValueError(msg)
    return ppm


def _price_sources(text: str) -> tuple[str, ...]:
    sources = _list(text)
    unknown = [s for s in sources if s not in {"kraken", "coinbase", "binance"}]
    if unknown or not sources:
        msg = "must list some of kraken, coinbase, binance"
        raise ValueError(msg)
    return sources


# variable name -> (settings field, parser)
_PARSERS: Final[dict[str, tuple[str, Callable[[str], object]]]] = {
    "DATABASE_URL": ("database_url", _database_url),
    "UPSTREAM_BASE_URL": ("upstream_base_url", _url),
    "UPSTREAM_API_KEY": ("upstream_api_key", str),
    "PROVIDERS_PATH": ("providers_path", str),
    "MODELS_PATH": ("models_path", str),
    "MODELS_REFRESH_INTERVAL_SECONDS": ("models_refresh_interval_seconds", _int),
    "CASHU_MINTS": ("cashu_mints", lambda t: tuple(normalize_mint_url(u) for u in _list(t))),
    "PRIMARY_MINT_URL": ("primary_mint_url", normalize_mint_url),
    "PRIMARY_MINT_UNIT": ("primary_mint_unit", _unit),
    "NAME": ("name", str),
    "DESCRIPTION": ("description", str),
    "HTTP_URL": ("http_url", _url),
    "ONION_URL": ("onion_url", _url),
    "NSEC": ("nsec", _nsec),
    "RELAYS": ("relays", lambda t: tuple(_relay(u) for u in _list(t))),
    "PROVIDER_ID": ("provider_id", str),
    "PROVIDERS_REFRESH_INTERVAL_SECONDS": ("providers_refresh_interval_seconds", _int),
    "RECEIVE_LN_ADDRESS": ("receive_ln_address", str),
    "MIN_PAYOUT_SAT": ("min_payout_sat", _int),
    "PAYOUT_INTERVAL_SECONDS": ("payout_interval_seconds", lambda t: _int(t, minimum=1)),
    "ADMIN_PASSWORD": ("admin_password", str),
    "FIXED_PRICING": ("fixed_pricing", _bool),
    "FIXED_COST_PER_REQUEST": ("fixed_cost_per_request_msat", lambda t: _scaled(t, MSAT_PER_SAT)),
    "FIXED_PER_1K_INPUT_TOKENS": ("fixed_per_1k_input_tokens_msat", lambda t: _scaled(t, MSAT_PER_SAT)),
    "FIXED_PER_1K_OUTPUT_TOKENS": ("fixed_per_1k_output_tokens_msat", lambda t: _scaled(t, MSAT_PER_SAT)),
    "EXCHANGE_FEE": ("exchange_fee_ppm", lambda t: _scaled(t, PPM, minimum=Decimal(1))),
    "UPSTREAM_PROVIDER_FEE": ("upstream_provider_fee_ppm", lambda t: _scaled(t, PPM, minimum=Decimal(1))),
    "MIN_REQUEST_MSAT": ("min_request_msat", lambda t: _int(t, minimum=1)),
    "TOLERANCE_PERCENTAGE": ("tolerance_ppm", _tolerance),
    "CHILD_KEY_COST": ("child_key_cost_msat", _int),
    "PRICING_REFRESH_INTERVAL_SECONDS": ("pricing_refresh_interval_seconds", lambda t: _int(t, minimum=1)),
    "BTC_USD_PRICE": ("btc_usd_price_micro", _btc_usd),
    "PRICE_SOURCES": ("price_sources", _price_sources),
    "PRICE_MAX_AGE_SECONDS": ("price_max_age_seconds", lambda t: _int(t, minimum=1)),
    "CORS_ORIGINS": ("cors_origins", _list),
    "LOG_LEVEL": ("log_level", _log_level),
    "MINT_OPERATION_TIMEOUT_SECONDS": ("mint_operation_timeout_seconds", lambda t: _int(t, minimum=1)),
    "MINT_MAX_CONCURRENCY": ("mint_max_concurrency", _int),
    "MINT_RETRY_MAX_ATTEMPTS": ("mint_retry_max_attempts", lambda t: _int(t, minimum=1)),
    "UPSTREAM_TIMEOUT_SECONDS": ("upstream_timeout_seconds", lambda t: _int(t, minimum=1)),
    "STREAM_DRAIN_SECONDS": ("stream_drain_seconds", _int),
    "RESERVATION_LEASE_SECONDS": ("reservation_lease_seconds", lambda t: _int(t, minimum=1)),
    "REDIS_URL": ("redis_url", str),
    "RATE_LIMIT_RPM": ("rate_limit_rpm", _int),
    "ALLOW_PRIVATE_LNURL": ("allow_private_lnurl", _bool),
    "HOST": ("host", str),
    "PORT": ("port", lambda t: _int(t, minimum=1)),
    "WORKERS": ("workers", lambda t: _int(t, minimum=1)),
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read exactly the SPEC §2 names from `environ` (default: the process environment).

    Raises SettingsError naming the first bad variable; secret values are never echoed.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, object] = {"relays": _list(DEFAULT_RELAYS)}
    for name, (field, parse) in _PARSERS.items():
        text = env.get(name)
        if text is None or (text.strip() == "" and name != "DESCRIPTION"):
            continue
        try:
            raw[field] = parse(text)
        except ValueError as exc:
            shown = "" if name in SECRET_NAMES else f" (got {text!r})"
            msg = f"{name}: {exc}{shown}"
            raise SettingsError(msg) from None
    _check_cross_field(raw)
    raw["provider_api_keys"] = _provider_api_keys(raw, env)
    return msgspec.convert(raw, Settings, strict=False)


def _check_cross_field(raw: dict[str, object]) -> None:
    mints = raw.get("cashu_mints", ())
    primary = raw.get("primary_mint_url")
    if not primary:
        if not mints:
            msg = "CASHU_MINTS: at least one trusted mint is required (or set PRIMARY_MINT_URL)"
            raise SettingsError(msg)
        raw["primary_mint_url"] = mints[0] if isinstance(mints, tuple) else ""
    database_url = str(raw.get("database_url", "sqlite"))
    workers = raw.get("workers", 1)
    if database_url.startswith("sqlite") and isinstance(workers, int) and workers > 1:
        msg = "WORKERS: more than one worker needs PostgreSQL; SQLite allows a single worker"
        raise SettingsError(msg)


def _provider_api_keys(raw: Mapping[str, object], env: Mapping[str, str]) -> dict[str, str]:
    """Resolve the `api_key_env` names of the providers file; a missing variable stops the start."""
    path = raw.get("providers_path")
    if not isinstance(path, str):
        return {}
    try:
        names = api_key_env_names(read_json_file(path, "PROVIDERS_PATH"))
    except CatalogFileError as exc:
        raise SettingsError(str(exc)) from None
    keys: dict[str, str] = {}
    for name in names:
        value = env.get(name, "").strip()
        if not value:
            msg = f"{name}: required by PROVIDERS_PATH (api_key_env) but not set"
            raise SettingsError(msg)
        keys[name] = value
    return keys
