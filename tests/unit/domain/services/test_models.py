"""Model catalog service: refresh from upstream feeds, keep the last good list, list prices like billing does."""

import pytest

from app.domain.catalog import ModelOffer
from app.domain.errors import ModelNotFoundError, UpstreamError
from app.domain.pricing import FeeSchedule, ModelPricing, PricingPolicy, max_cost_msat
from app.domain.provider_config import ModelOverride, ProviderConfig, ProviderType
from app.domain.services.models import ModelCatalogService, UpstreamFeed
from tests.fakes.upstream import FakeUpstream

RATE = 100_000 * 10**6
ENTRY = {
    "id": "v/m",
    "pricing": {"prompt": "0.000001", "completion": "0.000002"},
    "top_provider": {"context_length": 1000, "max_completion_tokens": 100},
}


async def test_refresh_builds_offers_from_the_feed_and_keeps_them_when_the_feed_fails() -> None:
    upstream = FakeUpstream("p", models=[ENTRY])
    service = ModelCatalogService(policy=PricingPolicy(), rate=lambda: RATE, feeds=[UpstreamFeed(upstream)])

    first = await service.refresh()
    upstream.fail_next = UpstreamError("down")
    second = await service.refresh()

    assert first.offers == second.offers == 1
    assert second.failures == {"p": "down"}
    assert [o.id for o in service.current().offers] == ["v/m"]


async def test_list_models_uses_the_billing_max_cost_and_hides_unpriced_models() -> None:
    upstream = FakeUpstream("p", models=[ENTRY, {"id": "v/free", "pricing": {}}])
    policy = PricingPolicy(fees=FeeSchedule())
    service = ModelCatalogService(policy=policy, rate=lambda: RATE, feeds=[UpstreamFeed(upstream)])
    await service.refresh()

    listed = service.list_models()

    assert [m.offer.id for m in listed] == ["v/m"]
    expected = max_cost_msat(listed[0].pricing, policy, RATE).value
    assert listed[0].prices.sats_max_cost is not None
    assert listed[0].prices.sats_max_cost * 1000 == expected
    with pytest.raises(ModelNotFoundError):
        service.get_model("v/free")


async def test_list_models_has_no_sats_figures_while_the_rate_is_stale() -> None:
    service = ModelCatalogService(
        policy=PricingPolicy(),
        rate=lambda: None,
        static_offers=[ModelOffer(id="v/m", provider_id="p", upstream_id="m", pricing=ModelPricing(1, 2))],
    )

    listed = service.get_model("V/M")

    assert listed.prices.sats_max_cost is None
    assert listed.prices.usd_max_cost > 0


async def test_provider_overrides_apply_to_the_feed() -> None:
    override = ModelOverride(
        "v/m", entry={"upstream_id": "vendor-m", "pricing": {"prompt": "0.00001", "completion": "0"}}
    )
    provider = ProviderConfig(id="p", type=ProviderType.OPENAI, base_url="http://x/v1", priority=3, models=(override,))
    service = ModelCatalogService(
        policy=PricingPolicy(), rate=lambda: RATE, feeds=[UpstreamFeed(FakeUpstream("p", models=[ENTRY]), provider)]
    )

    await service.refresh()

    offer = service.current().offers[0]
    assert (offer.upstream_id, offer.priority) == ("vendor-m", 3)
    assert offer.pricing is not None
    assert offer.pricing.prompt == 10_000_000
