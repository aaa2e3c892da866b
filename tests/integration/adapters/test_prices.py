"""Exchange price adapters against a real HTTP server on 127.0.0.1 serving each exchange's reply shapes."""

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from app.adapters.prices import (
    BinancePriceSource,
    CoinbasePriceSource,
    KrakenPriceSource,
    build_price_sources,
    make_price_client,
)
from app.domain.errors import PriceUnavailableError
from app.domain.ports import PriceSource
from app.domain.services.rates import ExchangeRateService
from tests.fakes.clock import FixedClock
from tests.support.backends import free_port
from tests.support.exchange import ExchangeServer, serve_exchange

USD = 10**6

KRAKEN_OK = {
    "error": [],
    "result": {
        "XXBTZUSD": {
            "a": ["97012.40000", "1", "1.000"],
            "b": ["97012.30000", "2", "2.000"],
            "c": ["97012.35000", "0.00120000"],
            "v": ["1403.38412313", "2405.21213126"],
            "p": ["96801.12345", "96711.91122"],
            "t": [22551, 40231],
            "l": ["95881.00000", "95881.00000"],
            "h": ["97550.00000", "97550.00000"],
            "o": "96100.10000",
        }
    },
}
COINBASE_OK = {"data": {"amount": "97001.125", "base": "BTC", "currency": "USD"}}
BINANCE_OK = {"symbol": "BTCUSDT", "price": "97020.01000000"}


@pytest.fixture
def exchange() -> Iterator[ExchangeServer]:
    with serve_exchange() as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
        yield http


KRAKEN_PATH = "/0/public/Ticker"
COINBASE_PATH = "/v2/prices/BTC-USD/spot"
BINANCE_PATH = "/api/v3/ticker/price"


async def test_kraken_reads_last_trade_price(exchange: ExchangeServer, client: httpx.AsyncClient) -> None:
    exchange.reply(KRAKEN_PATH, KRAKEN_OK)
    source: PriceSource = KrakenPriceSource(client, exchange.base_url)

    price = await source.btc_usd_micro()

    assert price == 97_012_350_000
    assert exchange.requests == ["/0/public/Ticker?pair=XXBTZUSD"]


async def test_coinbase_reads_spot_amount(exchange: ExchangeServer, client: httpx.AsyncClient) -> None:
    exchange.reply(COINBASE_PATH, COINBASE_OK)
    source: PriceSource = CoinbasePriceSource(client, exchange.base_url)

    assert await source.btc_usd_micro() == 97_001_125_000


async def test_binance_reads_ticker_price(exchange: ExchangeServer, client: httpx.AsyncClient) -> None:
    exchange.reply(BINANCE_PATH, BINANCE_OK)
    source: PriceSource = BinancePriceSource(client, exchange.base_url)

    price = await source.btc_usd_micro()

    assert price == 97_020_010_000
    assert exchange.requests == ["/api/v3/ticker/price?symbol=BTCUSDT"]


def _source(name: str, client: httpx.AsyncClient, base_url: str, timeout: float = 5.0) -> PriceSource:
    if name == "kraken":
        return KrakenPriceSource(client, base_url, timeout_seconds=timeout)
    if name == "coinbase":
        return CoinbasePriceSource(client, base_url, timeout_seconds=timeout)
    return BinancePriceSource(client, base_url, timeout_seconds=timeout)


PATHS = {"kraken": KRAKEN_PATH, "coinbase": COINBASE_PATH, "binance": BINANCE_PATH}
BAD_REPLIES = [
    ("kraken", {"error": ["EQuery:Unknown asset pair"]}, 200),
    ("kraken", {"error": [], "result": {}}, 200),
    ("kraken", {"error": [], "result": {"XXBTZUSD": {"c": ["-5.0", "1"]}}}, 200),
    ("kraken", {"error": ["EService:Unavailable"]}, 503),
    ("coinbase", {"errors": [{"id": "not_found", "message": "Invalid currency"}]}, 404),
    ("coinbase", {"data": {"amount": "abc", "base": "BTC", "currency": "USD"}}, 200),
    ("coinbase", {"data": {"amount": "97000", "base": "ETH", "currency": "USD"}}, 200),
    ("coinbase", [1, 2, 3], 200),
    ("binance", {"code": -1121, "msg": "Invalid symbol."}, 400),
    ("binance", {"symbol": "BTCUSDT", "price": None}, 200),
    ("binance", {"symbol": "BTCUSDT", "price": "0.00000000"}, 200),
    ("binance", {"symbol": "ETHUSDT", "price": "3000.0"}, 200),
    ("binance", {"code": 0, "msg": "Service unavailable from a restricted location"}, 451),
]


@pytest.mark.parametrize(("name", "payload", "status"), BAD_REPLIES)
async def test_source_raises_price_unavailable_when_reply_is_an_error_or_malformed(
    exchange: ExchangeServer, client: httpx.AsyncClient, name: str, payload: object, status: int
) -> None:
    exchange.reply(PATHS[name], payload, status)

    with pytest.raises(PriceUnavailableError, match=name):
        await _source(name, client, exchange.base_url).btc_usd_micro()


@pytest.mark.parametrize("name", ["kraken", "coinbase", "binance"])
async def test_source_raises_price_unavailable_when_reply_is_not_json(
    exchange: ExchangeServer, client: httpx.AsyncClient, name: str
) -> None:
    exchange.reply(PATHS[name], b"<html>502 Bad Gateway</html>")

    with pytest.raises(PriceUnavailableError, match="not JSON"):
        await _source(name, client, exchange.base_url).btc_usd_micro()


@pytest.mark.parametrize("name", ["kraken", "coinbase", "binance"])
async def test_source_raises_price_unavailable_when_exchange_is_unreachable(
    client: httpx.AsyncClient, name: str
) -> None:
    base_url = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(PriceUnavailableError, match="ConnectError"):
        await _source(name, client, base_url).btc_usd_micro()


async def test_source_raises_price_unavailable_when_reply_is_slower_than_timeout(
    exchange: ExchangeServer, client: httpx.AsyncClient
) -> None:
    exchange.reply(BINANCE_PATH, BINANCE_OK, delay=0.5)

    with pytest.raises(PriceUnavailableError, match="timed out"):
        await _source("binance", client, exchange.base_url, timeout=0.1).btc_usd_micro()


async def test_rate_service_takes_median_of_real_adapters(exchange: ExchangeServer, client: httpx.AsyncClient) -> None:
    exchange.reply(KRAKEN_PATH, KRAKEN_OK)
    exchange.reply(COINBASE_PATH, COINBASE_OK)
    exchange.reply(BINANCE_PATH, {"code": -1121, "msg": "Invalid symbol."}, 400)
    sources = [_source(name, client, exchange.base_url) for name in ("kraken", "coinbase", "binance")]
    rates = ExchangeRateService(sources, FixedClock())

    refresh = await rates.refresh()

    assert refresh.rate_micro == (97_012_350_000 + 97_001_125_000) // 2
    assert set(refresh.failures) == {"binance"}
    assert rates.current() == refresh.rate_micro


async def test_build_price_sources_follows_price_sources_order() -> None:
    async with make_price_client() as http:
        sources = build_price_sources(["binance", "kraken"], http)

        assert [s.name for s in sources] == ["binance", "kraken"]
        with pytest.raises(ValueError, match="unknown price source"):
            build_price_sources(["bitstamp"], http)
