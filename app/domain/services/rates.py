"""The BTC/USD rate: median of the exchanges, kept when all fail, stale after PRICE_MAX_AGE_SECONDS (SPEC §4.3)."""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from app.domain.errors import PriceUnavailableError
from app.domain.ports import Clock, PriceSource

MICRO_USD: Final = 10**6
MIN_QUOTE_MICRO: Final = 1_000 * MICRO_USD
MAX_QUOTE_MICRO: Final = 10_000_000 * MICRO_USD
SOURCE_TIMEOUT_SECONDS: Final = 5.0


def median_rate(quotes: Sequence[int]) -> int | None:
    """Median of the plausible quotes (1e3..1e7 USD, in micro-USD); two middle values give their mean, rounded
    down. None when no quote is plausible."""
    valid = sorted(q for q in quotes if MIN_QUOTE_MICRO <= q <= MAX_QUOTE_MICRO)
    if not valid:
        return None
    middle = len(valid) // 2
    if len(valid) % 2:
        return valid[middle]
    return (valid[middle - 1] + valid[middle]) // 2


@dataclass(frozen=True, slots=True)
class RateRefresh:
    """The outcome of one refresh: the rate now in force (None if there never was one), whether it changed, and
    per-source quotes (micro-USD) or failure reasons, for the `price_updated` log."""

    rate_micro: int | None
    updated: bool
    quotes: dict[str, int]
    failures: dict[str, str]


class ExchangeRateService:
    """Holds `B` (micro-USD per BTC) for this instance.

    With `fixed_rate_micro` (BTC_USD_PRICE) the rate never goes stale and no source is ever queried. Otherwise
    `refresh()` queries every source concurrently (each bounded by `source_timeout_seconds`) and keeps the median;
    when every source fails, the old rate stays (and ages).
    """

    def __init__(
        self,
        sources: Sequence[PriceSource],
        clock: Clock,
        *,
        max_age_seconds: int = 900,
        fixed_rate_micro: int | None = None,
        source_timeout_seconds: float = SOURCE_TIMEOUT_SECONDS,
    ) -> None:
        if fixed_rate_micro is not None and not MIN_QUOTE_MICRO <= fixed_rate_micro <= MAX_QUOTE_MICRO:
            msg = f"fixed BTC/USD rate out of range: {fixed_rate_micro!r}"
            raise ValueError(msg)
        self._sources = tuple(sources)
        self._clock = clock
        self._max_age_seconds = max_age_seconds
        self._fixed = fixed_rate_micro
        self._timeout = source_timeout_seconds
        self._rate: int | None = fixed_rate_micro
        self._updated_at: datetime | None = None

    @property
    def is_fixed(self) -> bool:
        return self._fixed is not None

    async def refresh(self) -> RateRefresh:
        """Query the sources once and adopt their median. Never raises for source failures."""
        if self._fixed is not None:
            return RateRefresh(self._fixed, updated=False, quotes={}, failures={})
        results = await asyncio.gather(*(self._ask(source) for source in self._sources))
        quotes: dict[str, int] = {}
        failures: dict[str, str] = {}
        for name, outcome in results:
            if isinstance(outcome, int):
                if MIN_QUOTE_MICRO <= outcome <= MAX_QUOTE_MICRO:
                    quotes[name] = outcome
                else:
                    failures[name] = f"implausible quote {outcome} micro-USD"
            else:
                failures[name] = outcome
        rate = median_rate(list(quotes.values()))
        if rate is None:
            return RateRefresh(self._rate, updated=False, quotes=quotes, failures=failures)
        self._rate = rate
        self._updated_at = self._clock.now()
        return RateRefresh(rate, updated=True, quotes=quotes, failures=failures)

    async def _ask(self, source: PriceSource) -> tuple[str, int | str]:
        try:
            async with asyncio.timeout(self._timeout):
                return source.name, await source.btc_usd_micro()
        except PriceUnavailableError as exc:
            return source.name, exc.message
        except TimeoutError:
            return source.name, "timed out"

    def age_seconds(self) -> float | None:
        """Seconds since the rate was last set; 0 for a fixed rate; None when there is none."""
        if self._fixed is not None:
            return 0.0
        if self._updated_at is None:
            return None
        return (self._clock.now() - self._updated_at).total_seconds()

    def current_or_none(self) -> int | None:
        """The rate in micro-USD per BTC, or None when it is stale or unknown (`sats_pricing: null`)."""
        age = self.age_seconds()
        if age is None or age > self._max_age_seconds:
            return None
        return self._rate

    def current(self) -> int:
        """The rate in micro-USD per BTC. Raises PriceUnavailableError (503 `price_unavailable`) when it is older
        than PRICE_MAX_AGE_SECONDS or there is none."""
        rate = self.current_or_none()
        if rate is None:
            msg = "The BTC/USD exchange rate is unavailable; try again shortly"
            raise PriceUnavailableError(msg)
        return rate
