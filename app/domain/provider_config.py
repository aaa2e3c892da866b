"""Configured upstream providers and their per-model overrides (SPEC §8.2), and how overrides shape offers."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final

from app.domain.catalog import ModelOffer, offer_from_openrouter, pricing_from_openrouter

DEFAULT_PROVIDER_ID: Final = "default"
DEFAULT_ANTHROPIC_VERSION: Final = "2023-06-01"


class ProviderType(StrEnum):
    OPENAI = "openai"
    OPENROUTER = "openrouter"
    ANTHROPIC = "anthropic"


@dataclass(frozen=True, slots=True)
class ModelOverride:
    """One entry of a provider's `models` map. `entry` is OpenRouter-shaped (`id` = the public model id) and
    carries whatever the operator set (`upstream_id`, `context_length`, `pricing`, `top_provider`, `name`…).
    `enabled: false` withdraws the model from this provider."""

    model_id: str
    enabled: bool = True
    entry: Mapping[str, object] = field(default_factory=dict)

    @property
    def has_pricing(self) -> bool:
        return pricing_from_openrouter(self.entry) is not None


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """An upstream from the providers file, or `default` built from UPSTREAM_BASE_URL/UPSTREAM_API_KEY.

    `base_url` includes `/v1` and has no trailing slash. `api_key` is a secret (never logged, not in repr).
    `fee_ppm` overrides UPSTREAM_PROVIDER_FEE (None = the node default). Lower `priority` is preferred.
    """

    id: str
    type: ProviderType
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    fee_ppm: int | None = None
    priority: int = 0
    anthropic_version: str = DEFAULT_ANTHROPIC_VERSION
    models: tuple[ModelOverride, ...] = ()

    @property
    def trusts_reported_cost(self) -> bool:
        """Only `openrouter` providers may bill the USD cost they report (SPEC §4.5)."""
        return self.type is ProviderType.OPENROUTER

    def override_for(self, model_id: str) -> ModelOverride | None:
        key = model_id.lower()
        return next((o for o in self.models if o.model_id.lower() == key), None)

    def offer(self, entry: Mapping[str, object]) -> ModelOffer | None:
        """An offer of this provider from one OpenRouter-shaped entry, with its priority and fee."""
        return offer_from_openrouter(entry, provider_id=self.id, priority=self.priority, fee_ppm=self.fee_ppm)

    def override_offers(self) -> list[ModelOffer]:
        """Offers defined by enabled overrides alone (used when the upstream feed does not list them)."""
        offers = (self.offer({**o.entry, "id": o.model_id}) for o in self.models if o.enabled)
        return [offer for offer in offers if offer is not None]

    def apply_overrides(self, fetched: Sequence[ModelOffer]) -> list[ModelOffer]:
        """This provider's catalog: the fetched offers with overrides applied (first match wins, SPEC §4.2).

        An override replaces the fields it sets (its `pricing` wins over the feed's; without one the feed's price
        stays); disabled models are dropped; overridden models the feed lacks are added from the override.
        """
        result: list[ModelOffer] = []
        seen: set[str] = set()
        for offer in fetched:
            override = self.override_for(offer.id)
            if override is None:
                result.append(offer)
                continue
            seen.add(override.model_id.lower())
            if override.enabled:
                result.append(_merge(offer, override))
        for override in self.models:
            if override.enabled and override.model_id.lower() not in seen:
                added = self.offer({**override.entry, "id": override.model_id})
                if added is not None:
                    result.append(added)
        return result


def _positive(value: object) -> int | None:
    return value if type(value) is int and value > 0 else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _merge(offer: ModelOffer, override: ModelOverride) -> ModelOffer:
    """The feed's offer with the fields the override sets: upstream id, name, prices and limits."""
    entry = override.entry
    top = entry.get("top_provider")
    top = top if isinstance(top, Mapping) else {}
    context = _positive(top.get("context_length")) or _positive(entry.get("context_length"))
    max_completion = _positive(top.get("max_completion_tokens"))
    feed = offer.pricing
    pricing = pricing_from_openrouter(entry) or feed
    if pricing is not None:
        context = context or (feed or pricing).context_length
        max_completion = max_completion or min((feed or pricing).max_completion_tokens, context)
        pricing = replace(pricing, context_length=context, max_completion_tokens=max_completion)
    return replace(
        offer,
        upstream_id=_text(entry.get("upstream_id")) or offer.upstream_id,
        name=_text(entry.get("name")) or offer.name,
        pricing=pricing,
    )


def default_provider(base_url: str, api_key: str | None) -> ProviderConfig:
    """The single `openai` upstream used when there is no providers file."""
    return ProviderConfig(
        id=DEFAULT_PROVIDER_ID, type=ProviderType.OPENAI, base_url=base_url.rstrip("/"), api_key=api_key
    )
