"""Pricing rules of SPEC §4: pUSD parsing, to_msat, the max-cost/reservation formula, charges, listings."""

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.errors import PriceUnavailableError
from app.domain.money import Msat
from app.domain.pricing import (
    CostBreakdown,
    FeeSchedule,
    FixedPricing,
    ModelPricing,
    PricingPolicy,
    RequestShape,
    bound_msat,
    charge_for,
    format_pusd,
    listed_prices,
    max_cost_msat,
    parse_usd,
    passthrough_charge,
    per_request_msat,
    reservation_amount,
    to_msat,
    usd_text,
)
from app.domain.usage import Usage

RATE_100K = 100_000 * 10**6  # 100,000 USD/BTC in micro-USD
NO_FEES = FeeSchedule(1_000_000, 1_000_000)
NO_FEE_POLICY = PricingPolicy(fees=NO_FEES, tolerance_ppm=0)

prices = st.integers(min_value=0, max_value=10**9)  # up to 0.001 USD per token
rates = st.integers(min_value=1_000 * 10**6, max_value=10_000_000 * 10**6)
fees_ppm = st.integers(min_value=1_000_000, max_value=3_000_000)
fee_schedules = st.builds(FeeSchedule, fees_ppm, fees_ppm)
pricings = st.builds(
    ModelPricing,
    prompt=prices,
    completion=prices,
    request=prices,
    image=prices,
    cache_read=prices,
    cache_write=prices,
    context_length=st.integers(min_value=1, max_value=2_000_000),
    max_completion_tokens=st.integers(min_value=1, max_value=2_000_000),
)
policies = st.builds(
    PricingPolicy,
    fees=fee_schedules,
    min_request=st.integers(min_value=1, max_value=10_000).map(Msat),
    tolerance_ppm=st.integers(min_value=0, max_value=999_999),
    fixed=st.builds(
        FixedPricing,
        st.integers(min_value=0, max_value=10**6),
        st.integers(min_value=0, max_value=10**6),
        st.integers(min_value=0, max_value=10**6),
    ),
    fixed_mode=st.booleans(),
)
shapes_without_images = st.builds(
    RequestShape,
    est_prompt=st.integers(min_value=0, max_value=5_000_000),
    req_max=st.none() | st.integers(min_value=1, max_value=5_000_000),
    n_images=st.just(0),
    no_output=st.booleans(),
)
usages = st.builds(
    Usage,
    input=st.integers(min_value=0, max_value=10**7),
    cache_read=st.integers(min_value=0, max_value=10**7),
    cache_write=st.integers(min_value=0, max_value=10**7),
    output=st.integers(min_value=0, max_value=10**7),
)


# -- parse_usd -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "pusd"),
    [
        ("0", 0),
        ("1", 10**12),
        ("0.00000015", 150_000),
        ("0.0000006", 600_000),
        ("1e-7", 100_000),
        ("0.000000000001", 1),
        ("0.0000000000001", 1),
        ("0.0000000000015", 2),
        (" 2.5 ", 2_500_000_000_000),
        (0, 0),
        (3, 3 * 10**12),
        (1.5e-07, 150_000),
    ],
)
def test_parse_usd_returns_exact_pusd_rounding_up_beyond_12_decimals(text: str | int | float, pusd: int) -> None:
    assert parse_usd(text) == pusd


@pytest.mark.parametrize("text", ["-1", "-0.000001", "abc", "", "nan", "inf", "1/0", True])
def test_parse_usd_raises_value_error_when_not_a_non_negative_amount(text: str) -> None:
    with pytest.raises(ValueError, match="USD amount"):
        parse_usd(text)


@given(st.integers(min_value=0, max_value=10**24))
def test_parse_usd_round_trips_format_pusd(pusd: int) -> None:
    assert parse_usd(format_pusd(pusd)) == pusd


@pytest.mark.parametrize(
    ("pusd", "decimals", "text"),
    [(150_000, 12, "0.00000015"), (0, 12, "0"), (10**12, 12, "1"), (1, 8, "0.00000001"), (123 * 10**10, 2, "1.23")],
)
def test_format_pusd_renders_plain_decimal(pusd: int, decimals: int, text: str) -> None:
    assert format_pusd(pusd, decimals) == text


# -- ModelPricing ----------------------------------------------------------------------------------------------------
def test_model_pricing_defaults_cache_rates_to_prompt_and_limits_to_context() -> None:
    pricing = ModelPricing(prompt=150_000, completion=600_000)

    assert (pricing.cache_read, pricing.cache_write) == (150_000, 150_000)
    assert pricing.context_length == 128_000
    assert pricing.max_completion_tokens == 128_000


def test_model_pricing_max_completion_defaults_to_its_context_length() -> None:
    assert ModelPricing(1, 1, context_length=8192).max_completion_tokens == 8192


def test_model_pricing_from_usd_parses_openrouter_strings() -> None:
    pricing = ModelPricing.from_usd(
        prompt="0.00000015", completion="0.0000006", request="0.001", cache_read="0.000000075", context_length=64000
    )

    assert pricing == ModelPricing(
        150_000,
        600_000,
        request=10**9,
        cache_read=75_000,
        cache_write=150_000,
        context_length=64000,
        max_completion_tokens=64000,
    )


@pytest.mark.parametrize(
    "kwargs", [{"prompt": -1, "completion": 0}, {"prompt": 0, "completion": 0, "context_length": 0}]
)
def test_model_pricing_raises_value_error_when_invalid(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="invalid"):
        ModelPricing(**kwargs)


def test_fee_schedule_raises_value_error_when_below_one() -> None:
    with pytest.raises(ValueError, match="exchange_fee_ppm"):
        FeeSchedule(999_999, 1_000_000)


# -- to_msat ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pusd", "rate", "fees", "msat"),
    [
        (10**12, RATE_100K, NO_FEES, 1_000_000),  # 1 USD = 1e-5 BTC = 1e6 msat
        (10**12, RATE_100K, FeeSchedule(), 1_055_250),  # x 1.005 x 1.05
        (1, RATE_100K, NO_FEES, 1),  # any positive cost rounds up to a msat
        (0, RATE_100K, FeeSchedule(), 0),
        (150_000 * 1000, RATE_100K, NO_FEES, 150),  # 1000 tokens at $0.15/M
    ],
)
def test_to_msat_converts_pusd_with_fees_rounding_up(pusd: int, rate: int, fees: FeeSchedule, msat: int) -> None:
    assert to_msat(pusd, rate, fees) == Msat(msat)


@given(st.integers(min_value=0, max_value=10**20), rates, fee_schedules)
def test_to_msat_is_the_exact_value_rounded_up(pusd: int, rate: int, fees: FeeSchedule) -> None:
    exact = Fraction(pusd * fees.exchange_fee_ppm * fees.provider_fee_ppm * 10**5, rate * 10**12)

    assert to_msat(pusd, rate, fees).value == math.ceil(exact)


def test_to_msat_raises_price_unavailable_when_rate_is_none() -> None:
    with pytest.raises(PriceUnavailableError):
        to_msat(1, None, FeeSchedule())


# -- reservation (SPEC §4.4) -----------------------------------------------------------------------------------------
def test_reservation_amount_follows_the_rip05_formula() -> None:
    pricing = ModelPricing(
        prompt=10**6, completion=2 * 10**6, request=10**9, image=10**8, context_length=1000, max_completion_tokens=500
    )
    shape = RequestShape(est_prompt=400, req_max=100, n_images=2)
    policy = PricingPolicy(fees=NO_FEES, tolerance_ppm=10_000)

    reserved = reservation_amount(pricing, shape, policy, RATE_100K)

    bound = 400 * 10**6 + 100 * 2 * 10**6 + 10**9 + 2 * 10**8  # = 1.8e9 pUSD = 1800 msat at 100k
    assert bound_msat(pricing, shape, policy, RATE_100K) == Msat(bound // 10**6)
    assert reserved == Msat(1800 * 990_000 // 10**6)


@pytest.mark.parametrize(
    ("shape", "tokens"),
    [
        (RequestShape(est_prompt=5000), (1000, 500)),  # P capped at cl, O = mo
        (RequestShape(est_prompt=10, req_max=50), (10, 50)),
        (RequestShape(est_prompt=10, req_max=9999), (10, 500)),  # O capped at mo
        (RequestShape(est_prompt=10, req_max=50, no_output=True), (10, 0)),  # embeddings
    ],
)
def test_request_shape_tokens_caps_prompt_and_output(shape: RequestShape, tokens: tuple[int, int]) -> None:
    pricing = ModelPricing(1, 1, context_length=1000, max_completion_tokens=500)

    assert shape.tokens(pricing) == tokens


def test_reservation_amount_is_floored_at_min_request_when_model_is_free() -> None:
    policy = PricingPolicy(min_request=Msat(7))

    assert reservation_amount(ModelPricing(0, 0), RequestShape(10), policy, RATE_100K) == Msat(7)


def test_reservation_amount_raises_price_unavailable_when_rate_is_stale_in_model_mode() -> None:
    with pytest.raises(PriceUnavailableError):
        reservation_amount(ModelPricing(1, 1), RequestShape(10), PricingPolicy(), None)


def test_reservation_amount_uses_fixed_prices_without_a_rate_in_fixed_mode() -> None:
    policy = PricingPolicy(
        fixed=FixedPricing(per_request_msat=1000, per_1k_input_msat=2000, per_1k_output_msat=3001),
        fixed_mode=True,
        tolerance_ppm=0,
    )
    pricing = ModelPricing.unpriced(context_length=1000, max_completion_tokens=100)

    reserved = reservation_amount(pricing, RequestShape(est_prompt=10, req_max=10), policy, None)

    assert reserved == Msat(1000 + math.ceil((10 * 2000 + 10 * 3001) / 1000))


@given(pricings, shapes_without_images, policies, rates)
def test_reservation_never_exceeds_max_cost_without_images(
    pricing: ModelPricing, shape: RequestShape, policy: PricingPolicy, rate: int
) -> None:
    assert reservation_amount(pricing, shape, policy, rate) <= max_cost_msat(pricing, policy, rate)


@given(pricings, shapes_without_images, policies, rates)
def test_reservation_is_at_least_min_request_and_within_tolerance_of_bound(
    pricing: ModelPricing, shape: RequestShape, policy: PricingPolicy, rate: int
) -> None:
    reserved = reservation_amount(pricing, shape, policy, rate)
    bound = bound_msat(pricing, shape, policy, rate)

    assert reserved >= policy.min_request
    assert reserved.value >= bound.value * (10**6 - policy.tolerance_ppm) // 10**6
    assert reserved <= max(bound, policy.min_request)


def test_max_cost_msat_is_to_msat_of_full_context_and_completion() -> None:
    pricing = ModelPricing(
        prompt=10**6, completion=2 * 10**6, request=10**9, context_length=1000, max_completion_tokens=500
    )

    assert max_cost_msat(pricing, NO_FEE_POLICY, RATE_100K) == Msat((1000 * 10**6 + 500 * 2 * 10**6 + 10**9) // 10**6)


# -- charges (SPEC §4.5) ---------------------------------------------------------------------------------------------
def test_charge_for_bills_each_bucket_at_its_rate() -> None:
    pricing = ModelPricing(
        prompt=10**6, completion=4 * 10**6, request=10**8, image=10**7, cache_read=10**5, cache_write=2 * 10**6
    )
    usage = Usage(input=1000, cache_read=2000, cache_write=300, output=500)

    cost = charge_for(usage, pricing, NO_FEE_POLICY, RATE_100K, n_images=1)

    # pUSD: in 1e9, cr 2e8, cw 6e8, out 2e9, base 1.1e8 -> msat at 1e6 pUSD per msat
    assert cost == CostBreakdown(
        base=Msat(110),
        input=Msat(1000),
        cache_read=Msat(200),
        cache_write=Msat(600),
        output=Msat(2000),
        total=Msat(3910),
    )


def test_charge_for_is_floored_at_min_request() -> None:
    policy = PricingPolicy(min_request=Msat(50))

    cost = charge_for(Usage(), ModelPricing(0, 0), policy, RATE_100K)

    assert cost.total == Msat(50)
    assert cost.input == Msat(50)


def test_charge_for_uses_reported_cost_only_when_trusted() -> None:
    usage = Usage(input=10, output=10, cost_usd_pusd=10**9)  # $0.001
    pricing = ModelPricing(prompt=10**6, completion=10**6)

    trusted = charge_for(usage, pricing, NO_FEE_POLICY, RATE_100K, trust_reported_cost=True)
    untrusted = charge_for(usage, pricing, NO_FEE_POLICY, RATE_100K)

    assert trusted.total == Msat(1000)
    assert untrusted.total == Msat(20)


def test_charge_for_fixed_mode_bills_per_request_and_per_1k_tokens() -> None:
    policy = PricingPolicy(fixed=FixedPricing(1000, 1500, 2500), fixed_mode=True)
    usage = Usage(input=700, cache_read=200, cache_write=100, output=333)

    cost = charge_for(usage, ModelPricing.unpriced(), policy, None)

    assert cost.total == Msat(1000 + math.ceil((1000 * 1500 + 333 * 2500) / 1000))
    assert cost.base == Msat(1000)
    assert cost.output == Msat(333 * 2500 // 1000)


@given(usages, pricings, policies, rates, st.integers(min_value=0, max_value=5), st.booleans())
def test_charge_for_parts_sum_to_total_and_total_is_floored_ceil(  # noqa: PLR0917 - hypothesis arguments
    usage: Usage, pricing: ModelPricing, policy: PricingPolicy, rate: int, n_images: int, reported: bool
) -> None:
    if reported:
        usage = Usage(usage.input, usage.cache_read, usage.cache_write, usage.output, cost_usd_pusd=usage.output)

    cost = charge_for(usage, pricing, policy, rate, n_images=n_images, trust_reported_cost=True)

    parts = cost.base + cost.input + cost.cache_read + cost.cache_write + cost.output
    assert parts == cost.total
    assert cost.total >= policy.min_request
    if not policy.fixed_mode and not reported:
        upstream = (
            usage.input * pricing.prompt
            + usage.cache_read * pricing.cache_read
            + usage.cache_write * pricing.cache_write
            + usage.output * pricing.completion
            + pricing.request
            + n_images * pricing.image
        )
        assert cost.total == max(policy.min_request, to_msat(upstream, rate, policy.fees))


@given(usages, pricings, policies, rates, st.integers(min_value=0, max_value=10**9))
def test_cost_breakdown_with_total_keeps_parts_summing_to_the_new_total(
    usage: Usage, pricing: ModelPricing, policy: PricingPolicy, rate: int, collected: int
) -> None:
    cost = charge_for(usage, pricing, policy, rate).with_total(Msat(collected))

    assert cost.total == Msat(collected)
    assert cost.base + cost.input + cost.cache_read + cost.cache_write + cost.output == Msat(collected)


def test_cost_breakdown_raises_value_error_when_parts_do_not_sum() -> None:
    with pytest.raises(ValueError, match="do not sum"):
        CostBreakdown(Msat(1), Msat(1), Msat(0), Msat(0), Msat(0), Msat(3))


# -- passthrough -----------------------------------------------------------------------------------------------------
def test_passthrough_charge_uses_request_price_when_usage_is_missing() -> None:
    cost = passthrough_charge(None, ModelPricing(0, 0, request=5 * 10**8), NO_FEE_POLICY, RATE_100K)

    assert cost.total == Msat(500)
    assert cost.base == Msat(500)


def test_passthrough_charge_uses_fixed_cost_per_request_when_no_request_price() -> None:
    policy = PricingPolicy(fixed=FixedPricing(per_request_msat=2000))

    assert passthrough_charge(None, None, policy, RATE_100K).total == Msat(2000)
    assert passthrough_charge(None, ModelPricing(1, 1), policy, RATE_100K).total == Msat(2000)


def test_passthrough_charge_is_never_below_min_request() -> None:
    policy = PricingPolicy(min_request=Msat(10), fixed=FixedPricing(per_request_msat=0))

    assert passthrough_charge(None, None, policy, None).total == Msat(10)
    assert per_request_msat(None, policy, None) == Msat(10)


def test_passthrough_charge_bills_usage_when_present() -> None:
    cost = passthrough_charge(Usage(input=1000), ModelPricing(10**6, 0), NO_FEE_POLICY, RATE_100K)

    assert cost.total == Msat(1000)


# -- /v1/models figures ----------------------------------------------------------------------------------------------
def test_listed_prices_include_fees_and_max_costs() -> None:
    pricing = ModelPricing(prompt=10**6, completion=2 * 10**6, context_length=1000, max_completion_tokens=500)
    policy = PricingPolicy(fees=FeeSchedule(1_000_000, 1_500_000))

    listed = listed_prices(pricing, policy, RATE_100K)

    assert listed.usd_prompt == 1_500_000
    assert listed.usd_max_prompt_cost == 1000 * 1_500_000
    assert listed.usd_max_completion_cost == 500 * 3_000_000
    assert listed.usd_max_cost == 1000 * 1_500_000 + 500 * 3_000_000
    assert listed.sats_prompt == Fraction(15, 10**4)  # 1.5e6 pUSD = 1.5 msat... per token -> 0.0015 sat
    assert listed.sats_max_cost == Fraction(max_cost_msat(pricing, policy, RATE_100K).value, 1000)


def test_listed_prices_have_no_sats_when_rate_is_stale() -> None:
    listed = listed_prices(ModelPricing(1, 1), PricingPolicy(), None)

    assert listed.sats_max_cost is None
    assert listed.sats_prompt is None
    assert listed.usd_prompt == 2  # 1 pUSD with fees, rounded up


def test_listed_prices_in_fixed_mode_show_fixed_sats_without_a_rate() -> None:
    policy = PricingPolicy(fixed=FixedPricing(1000, 2000, 4000), fixed_mode=True)
    pricing = ModelPricing.unpriced(context_length=1000, max_completion_tokens=100)

    listed = listed_prices(pricing, policy, None)

    assert listed.sats_request == 1
    assert listed.sats_prompt == Fraction(2, 1000)
    assert listed.sats_max_cost == Fraction(1000 + 2000 + 400, 1000)


@given(pricings, shapes_without_images, policies, rates)
def test_a_token_worth_ceil_max_cost_sats_covers_any_request_without_images(
    pricing: ModelPricing, shape: RequestShape, policy: PricingPolicy, rate: int
) -> None:
    listed = listed_prices(pricing, policy, rate)

    assert listed.sats_max_cost is not None
    assert math.ceil(listed.sats_max_cost) * 1000 >= reservation_amount(pricing, shape, policy, rate).value


# -- USD display -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("msat", "text"), [(1_000_000, "1.00000000"), (1, "0.00000100"), (0, "0.00000000"), (123_456_789, "123.45678900")]
)
def test_usd_text_renders_eight_decimals_at_the_rate(msat: int, text: str) -> None:
    assert usd_text(Msat(msat), RATE_100K) == text


def test_policy_for_provider_overrides_only_the_provider_fee() -> None:
    policy = PricingPolicy().for_provider(1_200_000)

    assert policy.fees == FeeSchedule(1_005_000, 1_200_000)
    assert PricingPolicy().for_provider(None) == PricingPolicy()
