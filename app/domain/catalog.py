"""The model catalog: which (provider, upstream model) candidates serve a requested model id (SPEC §4.2, §8.1)."""

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from app.domain.pricing import ModelPricing

_DATE_SUFFIX: Final = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True, slots=True)
class ModelOffer:
    """One provider's offer of one public model id (a *candidate*).

    `pricing` is None for a model without a price (offered only under fixed pricing). `fee_ppm` is the provider's
    UPSTREAM_PROVIDER_FEE override, None for the node default. `architecture` is shown as-is in `/v1/models`.
    """

    id: str
    provider_id: str
    upstream_id: str
    pricing: ModelPricing | None
    name: str = ""
    description: str = ""
    created: int = 0
    owned_by: str = ""
    priority: int = 0
    fee_ppm: int | None = None
    is_moderated: bool = False
    architecture: Mapping[str, object] = field(default_factory=dict)


def _without_vendor(model_id: str) -> str:
    return model_id.rsplit("/", 1)[-1]


def _without_date(model_id: str) -> str:
    return _DATE_SUFFIX.sub("", model_id)


def match_keys(model_id: str) -> tuple[str, str, str]:
    """The three lookup keys of SPEC §8.1, lowercased: exact, without `vendor/`, and also without a date suffix."""
    exact = model_id.strip().lower()
    bare = _without_vendor(exact)
    return exact, bare, _without_date(bare)


@dataclass(frozen=True, slots=True)
class Match:
    """A candidate and how closely its id matched (0 exact, 1 without vendor, 2 also without date)."""

    level: int
    offer: ModelOffer


class Catalog:
    """An immutable snapshot of every offer, indexed for case-insensitive lookup."""

    __slots__ = ("_by_key", "_offers")

    def __init__(self, offers: Iterable[ModelOffer] = ()) -> None:
        self._offers: tuple[ModelOffer, ...] = tuple(offers)
        self._by_key: tuple[dict[str, list[ModelOffer]], ...] = ({}, {}, {})
        for offer in self._offers:
            for level, key in enumerate(match_keys(offer.id)):
                self._by_key[level].setdefault(key, []).append(offer)

    @property
    def offers(self) -> Sequence[ModelOffer]:
        return self._offers

    def lookup(self, model_id: str) -> list[Match]:
        """Every candidate for `model_id`, best match level first (each offer once, at its best level).

        Empty when the model is unknown. Within a level the caller orders by bound, priority and id.
        """
        seen: set[int] = set()
        found: list[Match] = []
        for level, key in enumerate(match_keys(model_id)):
            for offer in self._by_key[level].get(key, ()):
                if id(offer) not in seen:
                    seen.add(id(offer))
                    found.append(Match(level, offer))
        return found

    def listed(self) -> list[ModelOffer]:
        """One offer per public id (lowest priority value, then provider id), sorted by id, for `/v1/models`."""
        best: dict[str, ModelOffer] = {}
        for offer in self._offers:
            key = offer.id.lower()
            current = best.get(key)
            if current is None or (offer.priority, offer.provider_id) < (current.priority, current.provider_id):
                best[key] = offer
        return sorted(best.values(), key=lambda o: o.id.lower())

    def get(self, model_id: str) -> ModelOffer | None:
        """The listed offer whose id equals `model_id` (case-insensitive), or None."""
        key = model_id.strip().lower()
        offers = self._by_key[0].get(key)
        if not offers:
            return None
        return min(offers, key=lambda o: (o.priority, o.provider_id))


def _int_or_none(value: object) -> int | None:
    return value if type(value) is int and value > 0 else None


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def pricing_from_openrouter(entry: Mapping[str, object]) -> ModelPricing | None:
    """A model's upstream prices from an OpenRouter-shaped entry (`pricing` USD-per-token strings, limits from
    `top_provider` then `context_length`); None when it has no usable price. Raises nothing."""
    prices = _mapping(entry.get("pricing"))
    top = _mapping(entry.get("top_provider"))
    context = _int_or_none(top.get("context_length")) or _int_or_none(entry.get("context_length"))
    max_completion = _int_or_none(top.get("max_completion_tokens"))
    if "prompt" not in prices or "completion" not in prices:
        return None
    try:
        return ModelPricing.from_usd(
            prompt=_price(prices["prompt"]),
            completion=_price(prices["completion"]),
            request=_price(prices.get("request", 0)),
            image=_price(prices.get("image", 0)),
            cache_read=_price(prices["input_cache_read"]) if prices.get("input_cache_read") is not None else None,
            cache_write=_price(prices["input_cache_write"]) if prices.get("input_cache_write") is not None else None,
            context_length=context,
            max_completion_tokens=max_completion,
        )
    except (ValueError, TypeError):
        return None


def _price(value: object) -> str | int | float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        msg = f"not a price: {value!r}"
        raise TypeError(msg)
    return value


def offer_from_openrouter(
    entry: Mapping[str, object], *, provider_id: str, priority: int = 0, fee_ppm: int | None = None
) -> ModelOffer | None:
    """A candidate from one OpenRouter-shaped model entry (`id`, `name`, `pricing`, `top_provider`…); None when
    the entry has no string id. `upstream_id` defaults to `id`."""
    model_id = entry.get("id")
    if not isinstance(model_id, str) or not model_id:
        return None
    upstream_id = entry.get("upstream_id")
    created = entry.get("created")
    architecture = entry.get("architecture")
    return ModelOffer(
        id=model_id,
        provider_id=provider_id,
        upstream_id=upstream_id if isinstance(upstream_id, str) and upstream_id else model_id,
        pricing=pricing_from_openrouter(entry),
        name=str(entry.get("name") or model_id),
        description=str(entry.get("description") or ""),
        created=created if type(created) is int else 0,
        owned_by=str(entry.get("owned_by") or model_id.split("/", 1)[0]),
        priority=priority,
        fee_ppm=fee_ppm,
        is_moderated=bool(_mapping(entry.get("top_provider")).get("is_moderated", False)),
        architecture=dict(architecture) if isinstance(architecture, Mapping) else {},
    )
