"""ExchangeRateService: median, plausibility, keep-on-failure, staleness and the fixed rate (SPEC §4.3)."""

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.errors import PriceUnavailableError
from app.domain.ports import Clock, PriceSource
from app.domain.services.rates import ExchangeRateService, median_rate
from tests.fakes.clock import FixedClock
from tests.fakes.prices import FakePriceSource

USD = 10**6


def service(
    sources: Sequence[PriceSource], clock: Clock, *, max_age_seconds: int = 900, fixed_rate_micro: int | None = None
) -> ExchangeRateService:
    """The service over fakes; mypy checks here that the fakes implement the ports."""
    return ExchangeRateService(sources, clock, max_age_seconds=max_age_seconds, fixed_rate_micro=fixed_rate_micro)


@pytest.mark.parametrize(
    ("quotes", "rate"),
    [
        ([100_000 * USD], 100_000 * USD),
        ([100_000 * USD, 90_000 * USD, 95_000 * USD], 95_000 * USD),
        ([100_000 * USD, 90_000 * USD + 1], 95_000 * USD),  # two middle values: mean rounded down
        ([100_000 * USD, 90_000 * USD, 999 * USD], 95_000 * USD),  # implausibly low quote dropped
        ([100_000 * USD, 10_000_001 * USD], 100_000 * USD),  # implausibly high quote dropped
        ([1_000 * USD, 10_000_000 * USD], 5_000_500 * USD),  # both bounds are plausible
        ([], None),
        ([5 * USD], None),
    ],
)
def test_median_rate_of_plausible_quotes(quotes: list[int], rate: int | None) -> None:
    assert median_rate(quotes) == rate


@given(st.lists(st.integers(min_value=1_000 * USD, max_value=10_000_000 * USD), min_size=1, max_size=7))
def test_median_rate_lies_between_the_extremes(quotes: list[int]) -> None:
    rate = median_rate(quotes)

    assert rate is not None
    assert min(quotes) <= rate <= max(quotes)


async def test_refresh_adopts_the_median_of_all_sources() -> None:
    sources = [FakePriceSource("a", 90_000 * USD), FakePriceSource("b", 100_000 * USD), FakePriceSource("c", 1)]
    rates = service(sources, FixedClock())

    refresh = await rates.refresh()

    assert refresh.rate_micro == 95_000 * USD
    assert refresh.updated
    assert refresh.quotes == {"a": 90_000 * USD, "b": 100_000 * USD}
    assert set(refresh.failures) == {"c"}
    assert rates.current() == 95_000 * USD
    assert [s.calls for s in sources] == [1, 1, 1]


async def test_refresh_keeps_the_old_rate_when_every_source_fails() -> None:
    source = FakePriceSource("a", 100_000 * USD)
    rates = service([source], FixedClock())
    await rates.refresh()
    source.unavailable = True

    refresh = await rates.refresh()

    assert not refresh.updated
    assert refresh.rate_micro == 100_000 * USD
    assert refresh.failures == {"a": "a is unavailable"}
    assert rates.current() == 100_000 * USD


async def test_refresh_ignores_a_failing_source_when_others_answer() -> None:
    failing = FakePriceSource("a", 50_000 * USD)
    failing.fail_next = 1
    rates = service([failing, FakePriceSource("b", 100_000 * USD)], FixedClock())

    refresh = await rates.refresh()

    assert refresh.rate_micro == 100_000 * USD


async def test_refresh_times_out_a_hanging_source() -> None:
    hanging = FakePriceSource("slow", 50_000 * USD)
    hanging.hang = True
    rates = ExchangeRateService(
        [hanging, FakePriceSource("b", 100_000 * USD)], FixedClock(), source_timeout_seconds=0.05
    )

    refresh = await rates.refresh()

    assert refresh.rate_micro == 100_000 * USD
    assert refresh.failures == {"slow": "timed out"}


async def test_current_raises_price_unavailable_when_no_rate_was_ever_fetched() -> None:
    source = FakePriceSource("a")
    source.unavailable = True
    rates = service([source], FixedClock())
    await rates.refresh()

    with pytest.raises(PriceUnavailableError):
        rates.current()
    assert rates.current_or_none() is None
    assert rates.age_seconds() is None


async def test_current_raises_price_unavailable_when_rate_is_older_than_max_age() -> None:
    clock = FixedClock()
    source = FakePriceSource("a", 100_000 * USD)
    rates = service([source], clock, max_age_seconds=900)
    await rates.refresh()
    source.unavailable = True

    clock.advance(900)
    await rates.refresh()
    at_limit = rates.current()
    clock.advance(1)

    assert at_limit == 100_000 * USD
    assert rates.age_seconds() == 901
    with pytest.raises(PriceUnavailableError):
        rates.current()


async def test_fixed_rate_never_goes_stale_and_never_queries_sources() -> None:
    clock = FixedClock()
    source = FakePriceSource("a", 50_000 * USD)
    rates = service([source], clock, fixed_rate_micro=100_000 * USD)

    await rates.refresh()
    clock.advance(10**9)

    assert rates.current() == 100_000 * USD
    assert rates.age_seconds() == 0
    assert source.calls == 0
    assert rates.is_fixed


def test_fixed_rate_raises_value_error_when_implausible() -> None:
    with pytest.raises(ValueError, match="out of range"):
        ExchangeRateService([], FixedClock(), fixed_rate_micro=5 * USD)
