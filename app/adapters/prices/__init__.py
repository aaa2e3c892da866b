"""BTC/USD price sources: Kraken, Coinbase and Binance public tickers over an injected httpx client."""

from collections.abc import Callable, Sequence

import httpx

from app.adapters.prices.exchanges import (
    BinancePriceSource,
    CoinbasePriceSource,
    KrakenPriceSource,
    make_price_client,
)
from app.domain.ports import PriceSource

__all__ = [
    "BinancePriceSource",
    "CoinbasePriceSource",
    "KrakenPriceSource",
    "build_price_sources",
    "make_price_client",
]


def build_price_sources(names: Sequence[str], client: httpx.AsyncClient) -> list[PriceSource]:
    """The sources named in PRICE_SOURCES (`kraken`, `coinbase`, `binance`), in order, sharing `client`.

    Raises ValueError for an unknown name.
    """
    factories: dict[str, Callable[[httpx.AsyncClient], PriceSource]] = {
        "kraken": KrakenPriceSource,
        "coinbase": CoinbasePriceSource,
        "binance": BinancePriceSource,
    }
    sources: list[PriceSource] = []
    for name in names:
        factory = factories.get(name)
        if factory is None:
            msg = f"unknown price source: {name!r}"
            raise ValueError(msg)
        sources.append(factory(client))
    return sources
