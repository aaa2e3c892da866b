"""Model prices, the USD->msat conversion, the one max-cost/reservation formula and charges (SPEC §4).

Units: prices are integer pUSD (10^-12 USD) per token / request / image; the BTC/USD rate `btc_usd_micro` is
micro-USD per BTC; fees are ppm multipliers (1.05 -> 1_050_000); amounts are `Msat`. Charges round up.
"""

from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Final

from app.domain.errors import PriceUnavailableError
from app.domain.money import MSAT_PER_SAT, Msat, ceil_div
from app.domain.usage import Usage
from app.domain.usd import MICRO_USD_PER_USD, PUSD_PER_USD, format_pusd, parse_usd

__all__ = [
    "DEFAULT_CONTEXT_LENGTH",
    "PPM",
    "PUSD_PER_USD",
    "CostBreakdown",
    "FeeSchedule",
    "FixedPricing",
    "ListedPrices",
    "ModelPricing",
    "PricingPolicy",
    "RequestShape",
    "bound_msat",
    "charge_for",
    "format_pusd",
    "listed_prices",
    "max_cost_msat",
    "msat_to_usd",
    "parse_usd",
    "passthrough_charge",
    "per_request_msat",
    "reservation_amount",
    "to_msat",
    "usd_text",
]

PPM: Final = 1_000_000
DEFAULT_CONTEXT_LENGTH: Final = 128_000
MSAT_PER_BTC: Final = 10**11
_UNSET: Final = -1


@dataclass(frozen=True, slots=True)
class ModelPricing:
    """A model's upstream prices in pUSD: `prompt`/`completion`/`cache_read`/`cache_write` per token, `request` per
    request, `image` per input image. Leaving `cache_read`/`cache_write` out makes them equal `prompt`;
    leaving `max_completion_tokens` out makes it `context_length` (SPEC §4.2)."""

    prompt: int
    completion: int
    request: int = 0
    image: int = 0
    cache_read: int = _UNSET
    cache_write: int = _UNSET
    context_length: int = DEFAULT_CONTEXT_LENGTH
    max_completion_tokens: int = _UNSET

    def __post_init__(self) -> None:
        if self.cache_read == _UNSET:
            object.__setattr__(self, "cache_read", self.prompt)
        if self.cache_write == _UNSET:
            object.__setattr__(self, "cache_write", self.prompt)
        if self.max_completion_tokens == _UNSET:
            object.__setattr__(self, "max_completion_tokens", self.context_length)
        for name in ("prompt", "completion", "request", "image", "cache_read", "cache_write"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                msg = f"invalid {name} price: {value!r}"
                raise ValueError(msg)
        for name in ("context_length", "max_completion_tokens"):
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                msg = f"invalid {name}: {value!r}"
                raise ValueError(msg)

    @classmethod
    def from_usd(
        cls,
        *,
        prompt: str | int | float,
        completion: str | int | float,
        request: str | int | float = 0,
        image: str | int | float = 0,
        cache_read: str | int | float | None = None,
        cache_write: str | int | float | None = None,
        context_length: int | None = None,
        max_completion_tokens: int | None = None,
    ) -> "ModelPricing":
        """Build from USD-per-unit decimal strings (OpenRouter `pricing`). Raises ValueError for bad values."""
        return cls(
            prompt=parse_usd(prompt),
            completion=parse_usd(completion),
            request=parse_usd(request),
            image=parse_usd(image),
            cache_read=_UNSET if cache_read is None else parse_usd(cache_read),
            cache_write=_UNSET if cache_write is None else parse_usd(cache_write),
            context_length=context_length or DEFAULT_CONTEXT_LENGTH,
            max_completion_tokens=max_completion_tokens or _UNSET,
        )

    @classmethod
    def unpriced(cls, context_length: int | None = None, max_completion_tokens: int | None = None) -> "ModelPricing":
        """Zero prices with the model's limits: only for fixed pricing, where token prices are not used."""
        return cls(
            0,
            0,
            context_length=context_length or DEFAULT_CONTEXT_LENGTH,
            max_completion_tokens=max_completion_tokens or _UNSET,
        )


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    """Multipliers on upstream USD in ppm: `EXCHANGE_FEE` and the provider's `UPSTREAM_PROVIDER_FEE`."""

    exchange_fee_ppm: int = 1_005_000
    provider_fee_ppm: int = 1_050_000

    def __post_init__(self) -> None:
        for name in ("exchange_fee_ppm", "provider_fee_ppm"):
            value = getattr(self, name)
            if type(value) is not int or value < PPM:
                msg = f"invalid {name}: {value!r} (must be >= {PPM})"
                raise ValueError(msg)

    def apply(self, pusd: int) -> Fraction:
        """Client price in pUSD (exact): upstream * EXCHANGE_FEE * UPSTREAM_PROVIDER_FEE."""
        return Fraction(pusd * self.exchange_fee_ppm * self.provider_fee_ppm, PPM * PPM)


@dataclass(frozen=True, slots=True)
class FixedPricing:
    """`FIXED_PRICING` prices in msat: per request, and per 1000 input / output tokens."""

    per_request_msat: int = 1000
    per_1k_input_msat: int = 0
    per_1k_output_msat: int = 0

    def __post_init__(self) -> None:
        for name in ("per_request_msat", "per_1k_input_msat", "per_1k_output_msat"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                msg = f"invalid {name}: {value!r}"
                raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class PricingPolicy:
    """The node-wide charging rules. `fixed` also supplies the passthrough per-request price (SPEC §4.5), so it
    is set in both modes; `fixed_mode` says whether it replaces model prices. `tolerance_ppm` is
    TOLERANCE_PERCENTAGE·10^4."""

    fees: FeeSchedule = FeeSchedule()
    min_request: Msat = field(default_factory=lambda: Msat(1))
    tolerance_ppm: int = 10_000
    fixed: FixedPricing = FixedPricing()
    fixed_mode: bool = False

    def __post_init__(self) -> None:
        if type(self.tolerance_ppm) is not int or not 0 <= self.tolerance_ppm < PPM:
            msg = f"invalid tolerance_ppm: {self.tolerance_ppm!r}"
            raise ValueError(msg)

    def for_provider(self, provider_fee_ppm: int | None) -> "PricingPolicy":
        """The same rules with a provider's own fee (None keeps the default UPSTREAM_PROVIDER_FEE)."""
        if provider_fee_ppm is None:
            return self
        return replace(self, fees=replace(self.fees, provider_fee_ppm=provider_fee_ppm))


@dataclass(frozen=True, slots=True)
class RequestShape:
    """What a request may consume: `est_prompt` tokens (estimate.reservation_prompt_tokens), the client's
    `req_max` output cap (estimate.validate_max_tokens; None when absent), input images, and whether the route
    produces no output tokens (embeddings)."""

    est_prompt: int
    req_max: int | None = None
    n_images: int = 0
    no_output: bool = False

    def tokens(self, pricing: ModelPricing) -> tuple[int, int]:
        """(P, O) of SPEC §4.4: P = min(cl, est_prompt); O = min(mo, req_max) or mo; O = 0 for embeddings."""
        prompt = min(pricing.context_length, max(self.est_prompt, 0))
        if self.no_output:
            return prompt, 0
        if self.req_max:
            return prompt, min(pricing.max_completion_tokens, self.req_max)
        return prompt, pricing.max_completion_tokens


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """What one request costs, in msat. `base` is the request and image fees. Parts are floored and `input`
    takes the remainder, so `base + input + cache_read + cache_write + output == total` (SPEC §8.4)."""

    base: Msat
    input: Msat
    cache_read: Msat
    cache_write: Msat
    output: Msat
    total: Msat

    def __post_init__(self) -> None:
        parts = self.base + self.input + self.cache_read + self.cache_write + self.output
        if parts != self.total:
            msg = f"cost parts {parts.value} do not sum to total {self.total.value}"
            raise ValueError(msg)

    def with_total(self, total: Msat) -> "CostBreakdown":
        """The same split for a different collected total (an overrun collects less than the charge).

        When the parts fit, `input` takes the difference; otherwise every part is scaled down (floored) and
        `input` takes the remainder.
        """
        return _split(
            base=self.base.value,
            cache_read=self.cache_read.value,
            cache_write=self.cache_write.value,
            output=self.output.value,
            total=total.value,
        )


def _split(*, base: int, cache_read: int, cache_write: int, output: int, total: int) -> CostBreakdown:
    fixed_parts = base + cache_read + cache_write + output
    if fixed_parts > total:
        base, cache_read, cache_write, output = (
            p * total // fixed_parts for p in (base, cache_read, cache_write, output)
        )
    remainder = total - base - cache_read - cache_write - output
    return CostBreakdown(
        base=Msat(base),
        input=Msat(remainder),
        cache_read=Msat(cache_read),
        cache_write=Msat(cache_write),
        output=Msat(output),
        total=Msat(total),
    )


def _rate(btc_usd_micro: int | None) -> int:
    if btc_usd_micro is None:
        msg = "the BTC/USD rate is stale or unknown"
        raise PriceUnavailableError(msg)
    if type(btc_usd_micro) is not int or btc_usd_micro <= 0:
        msg = f"invalid BTC/USD rate: {btc_usd_micro!r}"
        raise ValueError(msg)
    return btc_usd_micro


def _msat_exact(pusd: int, btc_usd_micro: int, fees: FeeSchedule) -> Fraction:
    return Fraction(pusd * fees.exchange_fee_ppm * fees.provider_fee_ppm * 10**5, btc_usd_micro * PUSD_PER_USD)


def to_msat(pusd: int, btc_usd_micro: int | None, fees: FeeSchedule) -> Msat:
    """Upstream pUSD to client msat with fees, rounded up:
    ceil(x·exch_ppm·prov_ppm·10^5 / (B·10^12)) (SPEC §4.1). Raises PriceUnavailableError when the rate is None."""
    rate = _rate(btc_usd_micro)
    return Msat(ceil_div(pusd * fees.exchange_fee_ppm * fees.provider_fee_ppm * 10**5, rate * PUSD_PER_USD))


def _to_msat_floor(pusd: int, btc_usd_micro: int, fees: FeeSchedule) -> int:
    return pusd * fees.exchange_fee_ppm * fees.provider_fee_ppm * 10**5 // (btc_usd_micro * PUSD_PER_USD)


def bound_msat(pricing: ModelPricing, shape: RequestShape, policy: PricingPolicy, btc_usd_micro: int | None) -> Msat:
    """The most a request of this shape can cost before tolerance and floor (SPEC §4.4 `bound`, in msat).

    Model mode: to_msat(P·p + O·c + r + n_images·i). Fixed mode:
    per_request + ceil((P·in1k + O·out1k)/1000); the rate is not needed. Candidates are ordered by this figure.
    """
    prompt, output = shape.tokens(pricing)
    if policy.fixed_mode:
        fixed = policy.fixed
        return Msat(
            fixed.per_request_msat
            + ceil_div(prompt * fixed.per_1k_input_msat + output * fixed.per_1k_output_msat, 1000)
        )
    upstream = prompt * pricing.prompt + output * pricing.completion + pricing.request + shape.n_images * pricing.image
    return to_msat(upstream, btc_usd_micro, policy.fees)


def reservation_amount(
    pricing: ModelPricing, shape: RequestShape, policy: PricingPolicy, btc_usd_micro: int | None
) -> Msat:
    """R of SPEC §4.4: max(MIN_REQUEST_MSAT, floor(bound·(10^6 - tolerance_ppm)/10^6)).

    Raises PriceUnavailableError in model mode when the rate is None (stale); fixed mode ignores the rate.
    Without images, R ≤ max_cost_msat(pricing, policy, rate) always holds.
    """
    bound = bound_msat(pricing, shape, policy, btc_usd_micro)
    discounted = bound.value * (PPM - policy.tolerance_ppm) // PPM
    return max(policy.min_request, Msat(discounted))


def max_cost_msat(pricing: ModelPricing, policy: PricingPolicy, btc_usd_micro: int | None) -> Msat:
    """The most any request without images can reserve: to_msat(cl·p + mo·c + r) in model mode (the fixed-mode
    bound with P = cl, O = mo otherwise), never below MIN_REQUEST_MSAT so that R ≤ max_cost always holds."""
    shape = RequestShape(est_prompt=pricing.context_length)
    return max(policy.min_request, bound_msat(pricing, shape, policy, btc_usd_micro))


def per_request_msat(pricing: ModelPricing | None, policy: PricingPolicy, btc_usd_micro: int | None) -> Msat:
    """The passthrough per-request price: to_msat(r) when the model has a positive `r` (model mode), else
    FIXED_COST_PER_REQUEST, never below MIN_REQUEST_MSAT (SPEC §4.5)."""
    if pricing is not None and pricing.request > 0 and not policy.fixed_mode:
        return max(policy.min_request, to_msat(pricing.request, btc_usd_micro, policy.fees))
    return max(policy.min_request, Msat(policy.fixed.per_request_msat))


def charge_for(
    usage: Usage,
    pricing: ModelPricing,
    policy: PricingPolicy,
    btc_usd_micro: int | None,
    *,
    n_images: int = 0,
    trust_reported_cost: bool = False,
) -> CostBreakdown:
    """The charge for normalized usage, with its parts (SPEC §4.5, §8.4).

    Model mode: max(MIN_REQUEST_MSAT, to_msat(in·p + cache_read·cr + cache_write·cw + out·c + r + n_images·i)).
    With `trust_reported_cost` (openrouter providers only) and a reported `usage.cost_usd_pusd`, the total is
    max(MIN_REQUEST_MSAT, to_msat(reported)) instead; the token parts are then rescaled to that total.
    Fixed mode: max(MIN_REQUEST_MSAT, per_request + ceil(((in+cache_read+cache_write)·in1k + out·out1k)/1000)).
    Raises PriceUnavailableError in model mode when the rate is None.
    """
    if policy.fixed_mode:
        return _fixed_charge(usage, policy)
    rate = _rate(btc_usd_micro)
    fees = policy.fees
    base_pusd = pricing.request + n_images * pricing.image
    parts = {
        "base": base_pusd,
        "input": usage.input * pricing.prompt,
        "cache_read": usage.cache_read * pricing.cache_read,
        "cache_write": usage.cache_write * pricing.cache_write,
        "output": usage.output * pricing.completion,
    }
    upstream = sum(parts.values())
    if trust_reported_cost and usage.cost_usd_pusd is not None:
        upstream = usage.cost_usd_pusd
    total = max(policy.min_request, to_msat(upstream, rate, fees))
    return _split(
        base=_to_msat_floor(parts["base"], rate, fees),
        cache_read=_to_msat_floor(parts["cache_read"], rate, fees),
        cache_write=_to_msat_floor(parts["cache_write"], rate, fees),
        output=_to_msat_floor(parts["output"], rate, fees),
        total=total.value,
    )


def _fixed_charge(usage: Usage, policy: PricingPolicy) -> CostBreakdown:
    fixed = policy.fixed
    variable = ceil_div(usage.prompt_tokens * fixed.per_1k_input_msat + usage.output * fixed.per_1k_output_msat, 1000)
    total = max(policy.min_request.value, fixed.per_request_msat + variable)
    return _split(
        base=fixed.per_request_msat,
        cache_read=usage.cache_read * fixed.per_1k_input_msat // 1000,
        cache_write=usage.cache_write * fixed.per_1k_input_msat // 1000,
        output=usage.output * fixed.per_1k_output_msat // 1000,
        total=total,
    )


def passthrough_charge(
    usage: Usage | None, pricing: ModelPricing | None, policy: PricingPolicy, btc_usd_micro: int | None
) -> CostBreakdown:
    """Charge for a passthrough route (SPEC §4.5): the usage cost when there is usage (and, in model mode, a
    price), otherwise the per-request price, all as `base`."""
    if usage is not None and (policy.fixed_mode or pricing is not None):
        return charge_for(usage, pricing or ModelPricing.unpriced(), policy, btc_usd_micro)
    price = per_request_msat(pricing, policy, btc_usd_micro)
    return _split(base=price.value, cache_read=0, cache_write=0, output=0, total=price.value)


def msat_to_usd(amount: Msat, btc_usd_micro: int) -> Fraction:
    """USD value of msat at the rate (exact): msat·B / (10^11·10^6)."""
    return Fraction(amount.value * _rate(btc_usd_micro), MSAT_PER_BTC * MICRO_USD_PER_USD)


def usd_text(amount: Msat, btc_usd_micro: int, decimals: int = 8) -> str:
    """`x-routstr-cost-usd` / `usage.cost.total_usd`: USD with `decimals` fixed places, rounded half up."""
    value = msat_to_usd(amount, btc_usd_micro) * 10**decimals
    units = (value.numerator * 2 + value.denominator) // (2 * value.denominator)
    whole, frac = divmod(units, 10**decimals)
    return f"{whole}.{frac:0{decimals}d}" if decimals else str(whole)


@dataclass(frozen=True, slots=True)
class ListedPrices:
    """The `/v1/models` figures for one model, fees included.

    `usd_*` are pUSD (exact client price rounded up to whole pUSD; format with `format_pusd`). `sats_*` are exact
    sats (`float()` them at the edge); they are None when the rate is stale. `max_cost_sats` is
    max_cost_msat/1000, so a token worth ceil(max_cost_sats) sats covers any request without images.
    """

    usd_prompt: int
    usd_completion: int
    usd_request: int
    usd_image: int
    usd_cache_read: int
    usd_cache_write: int
    usd_max_prompt_cost: int
    usd_max_completion_cost: int
    usd_max_cost: int
    sats_prompt: Fraction | None
    sats_completion: Fraction | None
    sats_request: Fraction | None
    sats_image: Fraction | None
    sats_cache_read: Fraction | None
    sats_cache_write: Fraction | None
    sats_max_prompt_cost: Fraction | None
    sats_max_completion_cost: Fraction | None
    sats_max_cost: Fraction | None


def _client_pusd(pusd: int, fees: FeeSchedule) -> int:
    return _ceil(fees.apply(pusd))


def listed_prices(pricing: ModelPricing, policy: PricingPolicy, btc_usd_micro: int | None) -> ListedPrices:
    """`pricing` and `sats_pricing` of SPEC §9: max_prompt_cost = cl·p, max_completion_cost = mo·c, max_cost from
    `max_cost_msat` (the same function reservations use). A None (stale) rate gives None sats figures in model
    mode. Fixed mode lists the fixed msat prices in sats (known without a rate) and their USD value at the rate
    (the model's own USD prices with fees when the rate is unknown)."""
    if policy.fixed_mode:
        return _listed_fixed(pricing, policy, btc_usd_micro)
    fees = policy.fees
    upstream = _upstream_figures(pricing)
    usd = {name: _client_pusd(pusd, fees) for name, pusd in upstream.items()}
    usd["max_cost"] = _client_pusd(
        upstream["max_prompt_cost"] + upstream["max_completion_cost"] + pricing.request, fees
    )
    sats: dict[str, Fraction | None] = dict.fromkeys(usd)
    if btc_usd_micro is not None:
        rate = _rate(btc_usd_micro)
        for name, pusd in upstream.items():
            sats[name] = _msat_exact(pusd, rate, fees) / MSAT_PER_SAT
        sats["max_cost"] = Fraction(max_cost_msat(pricing, policy, rate).value, MSAT_PER_SAT)
    return _listed(usd, sats)


def _upstream_figures(pricing: ModelPricing) -> dict[str, int]:
    return {
        "prompt": pricing.prompt,
        "completion": pricing.completion,
        "request": pricing.request,
        "image": pricing.image,
        "cache_read": pricing.cache_read,
        "cache_write": pricing.cache_write,
        "max_prompt_cost": pricing.context_length * pricing.prompt,
        "max_completion_cost": pricing.max_completion_tokens * pricing.completion,
    }


def _listed_fixed(pricing: ModelPricing, policy: PricingPolicy, btc_usd_micro: int | None) -> ListedPrices:
    fixed = policy.fixed
    per_token_in = Fraction(fixed.per_1k_input_msat, 1000)
    per_token_out = Fraction(fixed.per_1k_output_msat, 1000)
    msat: dict[str, Fraction] = {
        "prompt": per_token_in,
        "completion": per_token_out,
        "request": Fraction(fixed.per_request_msat),
        "image": Fraction(0),
        "cache_read": per_token_in,
        "cache_write": per_token_in,
        "max_prompt_cost": pricing.context_length * per_token_in,
        "max_completion_cost": pricing.max_completion_tokens * per_token_out,
        "max_cost": Fraction(max_cost_msat(pricing, policy, btc_usd_micro).value),
    }
    sats: dict[str, Fraction | None] = {name: value / MSAT_PER_SAT for name, value in msat.items()}
    if btc_usd_micro is not None:
        rate = _rate(btc_usd_micro)
        # msat -> pUSD at the rate, rounded up: msat·B·10^12 / (10^11·10^6)
        usd = {
            name: _ceil(value * rate * PUSD_PER_USD / (MSAT_PER_BTC * MICRO_USD_PER_USD))
            for name, value in msat.items()
        }
    else:
        upstream = _upstream_figures(pricing)
        usd = {name: _client_pusd(pusd, policy.fees) for name, pusd in upstream.items()}
        usd["max_cost"] = _client_pusd(
            upstream["max_prompt_cost"] + upstream["max_completion_cost"] + pricing.request, policy.fees
        )
    return _listed(usd, sats)


def _ceil(value: Fraction) -> int:
    return -(-value.numerator // value.denominator)


def _listed(usd: dict[str, int], sats: dict[str, Fraction | None]) -> ListedPrices:
    return ListedPrices(
        usd_prompt=usd["prompt"],
        usd_completion=usd["completion"],
        usd_request=usd["request"],
        usd_image=usd["image"],
        usd_cache_read=usd["cache_read"],
        usd_cache_write=usd["cache_write"],
        usd_max_prompt_cost=usd["max_prompt_cost"],
        usd_max_completion_cost=usd["max_completion_cost"],
        usd_max_cost=usd["max_cost"],
        sats_prompt=sats["prompt"],
        sats_completion=sats["completion"],
        sats_request=sats["request"],
        sats_image=sats["image"],
        sats_cache_read=sats["cache_read"],
        sats_cache_write=sats["cache_write"],
        sats_max_prompt_cost=sats["max_prompt_cost"],
        sats_max_completion_cost=sats["max_completion_cost"],
        sats_max_cost=sats["max_cost"],
    )
