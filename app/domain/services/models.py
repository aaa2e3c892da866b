"""The model catalog use case: refresh offers from upstream feeds, list them with prices (SPEC §4.2, §9)."""

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from app.domain.catalog import Catalog, ModelOffer, offer_from_openrouter
from app.domain.errors import ModelNotFoundError, UpstreamError, UpstreamTimeoutError
from app.domain.ports import Upstream
from app.domain.pricing import ListedPrices, ModelPricing, PricingPolicy, listed_prices
from app.domain.provider_config import ProviderConfig


@dataclass(frozen=True, slots=True)
class ListedModel:
    """A `/v1/models` entry: the offer and its prices with fees (sats figures None while the rate is stale)."""

    offer: ModelOffer
    pricing: ModelPricing
    prices: ListedPrices


@dataclass(frozen=True, slots=True)
class UpstreamFeed:
    """Read `GET /models` of this upstream. `provider` (when known) supplies priority, fee and the per-model
    overrides applied to what the feed lists."""

    upstream: Upstream
    provider: ProviderConfig | None = None


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    offers: int
    failures: Mapping[str, str]


class ModelCatalogService:
    """Holds the current `Catalog` snapshot for this instance.

    `static_offers` (MODELS_PATH or per-model overrides) take precedence: when given they are the whole catalog
    unless `feeds` also list upstreams to read. Refreshing never empties a provider's offers on failure: the last
    good list stays.
    """

    def __init__(
        self,
        *,
        policy: PricingPolicy,
        rate: Callable[[], int | None],
        feeds: Sequence[UpstreamFeed] = (),
        static_offers: Sequence[ModelOffer] = (),
    ) -> None:
        self._policy = policy
        self._rate = rate
        self._feeds = tuple(feeds)
        self._static = tuple(static_offers)
        self._fetched: dict[str, tuple[ModelOffer, ...]] = {}
        self._catalog = Catalog(self._static)

    def current(self) -> Catalog:
        return self._catalog

    async def refresh(self) -> RefreshOutcome:
        """Re-read every upstream feed concurrently; a failing feed keeps its previous offers."""
        results = await asyncio.gather(*(self._read(feed) for feed in self._feeds))
        failures: dict[str, str] = {}
        for feed, outcome in zip(self._feeds, results, strict=True):
            if isinstance(outcome, str):
                failures[feed.upstream.provider_id] = outcome
            else:
                self._fetched[feed.upstream.provider_id] = outcome
        static_ids = {(o.provider_id, o.id.lower()) for o in self._static}
        fetched = [
            offer
            for offers in self._fetched.values()
            for offer in offers
            if (offer.provider_id, offer.id.lower()) not in static_ids
        ]
        self._catalog = Catalog((*self._static, *fetched))
        return RefreshOutcome(offers=len(self._catalog.offers), failures=failures)

    async def _read(self, feed: UpstreamFeed) -> tuple[ModelOffer, ...] | str:
        try:
            entries = await feed.upstream.fetch_models()
        except (UpstreamError, UpstreamTimeoutError) as exc:
            return exc.message
        provider = feed.provider
        if provider is None:
            offers = (offer_from_openrouter(entry, provider_id=feed.upstream.provider_id) for entry in entries)
            return tuple(o for o in offers if o is not None)
        found = [o for o in (provider.offer(entry) for entry in entries) if o is not None]
        return tuple(provider.apply_overrides(found))

    def _listed(self, offer: ModelOffer, rate: int | None) -> ListedModel | None:
        if offer.pricing is None and not self._policy.fixed_mode:
            return None  # models without a price are not offered unless pricing is fixed
        pricing = offer.pricing or ModelPricing.unpriced()
        policy = self._policy.for_provider(offer.fee_ppm)
        return ListedModel(offer=offer, pricing=pricing, prices=listed_prices(pricing, policy, rate))

    def list_models(self) -> list[ListedModel]:
        """Every offered model, one per id, with prices from the same max-cost function reservations use."""
        rate = self._rate()
        listed = (self._listed(offer, rate) for offer in self._catalog.listed())
        return [m for m in listed if m is not None]

    def get_model(self, model_id: str) -> ListedModel:
        """One model by exact id (case-insensitive). Raises ModelNotFoundError."""
        offer = self._catalog.get(model_id)
        found = self._listed(offer, self._rate()) if offer is not None else None
        if found is None:
            msg = f"Model '{model_id}' is not offered by this node"
            raise ModelNotFoundError(msg, details={"model": model_id})
        return found
