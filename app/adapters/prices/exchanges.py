"""Exchange ticker adapters: each turns one public JSON reply into micro-USD per BTC or PriceUnavailableError."""

from collections.abc import Mapping
from fractions import Fraction
from typing import Final

import httpx

from app.domain.errors import PriceUnavailableError

TIMEOUT_SECONDS: Final = 5.0
MICRO_USD: Final = 10**6
KRAKEN_URL: Final = "https://api.kraken.com"
COINBASE_URL: Final = "https://api.coinbase.com"
BINANCE_URL: Final = "https://api.binance.com"
_HTTP_OK: Final = 200


def make_price_client(timeout_seconds: float = TIMEOUT_SECONDS) -> httpx.AsyncClient:
    """The shared client for price sources: `timeout_seconds` for connect and read, verified TLS, no redirects."""
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout_seconds), follow_redirects=False)


def micro_usd(value: object, source: str) -> int:
    """A decimal price (string or number) as micro-USD, rounded down. Raises PriceUnavailableError."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        msg = f"{source}: price is not a number"
        raise PriceUnavailableError(msg)
    text = repr(value) if isinstance(value, float) else str(value).strip()
    try:
        price = Fraction(text)
    except (ValueError, ZeroDivisionError):
        msg = f"{source}: price is not a number"
        raise PriceUnavailableError(msg) from None
    scaled = price * MICRO_USD
    result = scaled.numerator // scaled.denominator
    if result <= 0:
        msg = f"{source}: price is not positive"
        raise PriceUnavailableError(msg)
    return result


def _at(data: object, *path: str | int) -> object:
    """The JSON value at `path`, or None when any step is missing or of the wrong type."""
    for step in path:
        if isinstance(step, int):
            if not isinstance(data, list) or not -len(data) <= step < len(data):
                return None
            data = data[step]
        else:
            if not isinstance(data, Mapping) or step not in data:
                return None
            data = data[step]
    return data


async def _get_json(
    client: httpx.AsyncClient, source: str, url: str, params: Mapping[str, str], timeout_seconds: float
) -> object:
    """GET `url` and parse JSON; any transport failure, timeout, non-200 status or non-JSON reply is
    PriceUnavailableError. Error bodies are not echoed."""
    try:
        response = await client.get(url, params=dict(params), timeout=timeout_seconds)
    except httpx.TimeoutException:
        msg = f"{source}: timed out"
        raise PriceUnavailableError(msg) from None
    except httpx.HTTPError as exc:
        msg = f"{source}: {type(exc).__name__}"
        raise PriceUnavailableError(msg) from None
    if response.status_code != _HTTP_OK:
        msg = f"{source}: HTTP {response.status_code}"
        raise PriceUnavailableError(msg)
    try:
        return response.json()
    except ValueError:
        msg = f"{source}: reply is not JSON"
        raise PriceUnavailableError(msg) from None


class KrakenPriceSource:
    """Kraken `GET /0/public/Ticker?pair=XXBTZUSD`: the last trade price `result.XXBTZUSD.c[0]`.

    Kraken answers errors with HTTP 200 and a non-empty `error` list; those are failures too.
    """

    PAIR: Final = "XXBTZUSD"

    def __init__(
        self, client: httpx.AsyncClient, base_url: str = KRAKEN_URL, *, timeout_seconds: float = TIMEOUT_SECONDS
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/0/public/Ticker"
        self._timeout = timeout_seconds

    @property
    def name(self) -> str:
        return "kraken"

    async def btc_usd_micro(self) -> int:
        data = await _get_json(self._client, self.name, self._url, {"pair": self.PAIR}, self._timeout)
        errors = _at(data, "error")
        if isinstance(errors, list) and errors:
            msg = f"kraken: error {str(errors[0])[:80]}"
            raise PriceUnavailableError(msg)
        return micro_usd(_at(data, "result", self.PAIR, "c", 0), self.name)


class CoinbasePriceSource:
    """Coinbase `GET /v2/prices/BTC-USD/spot`: `data.amount`, checked to be `BTC` in `USD`."""

    def __init__(
        self, client: httpx.AsyncClient, base_url: str = COINBASE_URL, *, timeout_seconds: float = TIMEOUT_SECONDS
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/v2/prices/BTC-USD/spot"
        self._timeout = timeout_seconds

    @property
    def name(self) -> str:
        return "coinbase"

    async def btc_usd_micro(self) -> int:
        data = await _get_json(self._client, self.name, self._url, {}, self._timeout)
        currency = _at(data, "data", "currency")
        base = _at(data, "data", "base")
        if currency not in {None, "USD"} or base not in {None, "BTC"}:
            msg = "coinbase: not a BTC-USD quote"
            raise PriceUnavailableError(msg)
        return micro_usd(_at(data, "data", "amount"), self.name)


class BinancePriceSource:
    """Binance `GET /api/v3/ticker/price?symbol=BTCUSDT`: `price` (USDT, taken as USD)."""

    SYMBOL: Final = "BTCUSDT"

    def __init__(
        self, client: httpx.AsyncClient, base_url: str = BINANCE_URL, *, timeout_seconds: float = TIMEOUT_SECONDS
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/api/v3/ticker/price"
        self._timeout = timeout_seconds

    @property
    def name(self) -> str:
        return "binance"

    async def btc_usd_micro(self) -> int:
        data = await _get_json(self._client, self.name, self._url, {"symbol": self.SYMBOL}, self._timeout)
        if _at(data, "symbol") not in {None, self.SYMBOL}:
            msg = "binance: not a BTCUSDT quote"
            raise PriceUnavailableError(msg)
        return micro_usd(_at(data, "price"), self.name)
