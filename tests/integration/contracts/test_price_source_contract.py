"""PriceSource contract: the fake and every exchange adapter (against a loopback server) behave alike."""

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest

from app.adapters.prices import BinancePriceSource, CoinbasePriceSource, KrakenPriceSource
from app.domain.errors import PriceUnavailableError
from app.domain.ports import PriceSource
from tests.fakes.prices import FakePriceSource
from tests.support.exchange import ExchangeServer, serve_exchange

PRICE_MICRO = 97_000_500_000  # 97,000.5 USD


@dataclass
class Subject:
    """A source plus the knobs a contract test needs: make the next answers good or failing."""

    source: PriceSource
    answer: Callable[[], None]
    fail: Callable[[], None]


def _exchange_subject(server: ExchangeServer, client: httpx.AsyncClient, name: str) -> Subject:
    table: dict[str, tuple[str, object, PriceSource]] = {
        "kraken": (
            "/0/public/Ticker",
            {"error": [], "result": {"XXBTZUSD": {"c": ["97000.50000", "0.1"]}}},
            KrakenPriceSource(client, server.base_url),
        ),
        "coinbase": (
            "/v2/prices/BTC-USD/spot",
            {"data": {"amount": "97000.5", "base": "BTC", "currency": "USD"}},
            CoinbasePriceSource(client, server.base_url),
        ),
        "binance": (
            "/api/v3/ticker/price",
            {"symbol": "BTCUSDT", "price": "97000.50000000"},
            BinancePriceSource(client, server.base_url),
        ),
    }
    path, good, source = table[name]
    return Subject(
        source=source,
        answer=lambda: server.reply(path, good),
        fail=lambda: server.reply(path, {"error": "maintenance"}, status=503),
    )


def _fake_subject() -> Subject:
    fake = FakePriceSource("fake", PRICE_MICRO)

    def answer() -> None:
        fake.unavailable = False

    def fail() -> None:
        fake.unavailable = True

    return Subject(source=fake, answer=answer, fail=fail)


@pytest.fixture(params=["fake", "kraken", "coinbase", "binance"])
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    if request.param == "fake":
        yield _fake_subject()
        return
    with serve_exchange() as server:
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
            yield _exchange_subject(server, client, request.param)


async def test_price_source_returns_micro_usd_per_btc(subject: Subject) -> None:
    subject.answer()

    assert await subject.source.btc_usd_micro() == PRICE_MICRO


async def test_price_source_raises_price_unavailable_when_the_exchange_fails(subject: Subject) -> None:
    subject.fail()

    with pytest.raises(PriceUnavailableError):
        await subject.source.btc_usd_micro()


async def test_price_source_recovers_after_a_failure(subject: Subject) -> None:
    subject.fail()
    with pytest.raises(PriceUnavailableError):
        await subject.source.btc_usd_micro()
    subject.answer()

    assert await subject.source.btc_usd_micro() == PRICE_MICRO


async def test_price_source_has_a_stable_name(subject: Subject) -> None:
    assert subject.source.name in {"fake", "kraken", "coinbase", "binance"}
