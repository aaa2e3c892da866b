"""Provider configs: per-model overrides on top of fetched offers (SPEC §4.2 source order, §8.2)."""

from app.domain.catalog import ModelOffer
from app.domain.pricing import ModelPricing
from app.domain.provider_config import ModelOverride, ProviderConfig, ProviderType, default_provider


def provider(*overrides: ModelOverride, kind: ProviderType = ProviderType.OPENAI) -> ProviderConfig:
    return ProviderConfig(
        id="p",
        type=kind,
        base_url="https://up.example/v1",
        api_key="k",
        fee_ppm=1_100_000,
        priority=3,
        models=overrides,
    )


def fetched(model_id: str, pricing: ModelPricing | None) -> ModelOffer:
    return ModelOffer(id=model_id, provider_id="p", upstream_id=model_id, pricing=pricing, name=model_id)


FEED_PRICING = ModelPricing(100, 200, context_length=64_000, max_completion_tokens=4096)


def test_apply_overrides_keeps_offers_without_override() -> None:
    offers = [fetched("a", FEED_PRICING), fetched("b", None)]

    assert provider().apply_overrides(offers) == offers


def test_apply_overrides_drops_disabled_models() -> None:
    result = provider(ModelOverride("A", enabled=False)).apply_overrides([fetched("a", FEED_PRICING)])

    assert result == []


def test_apply_overrides_prefers_override_pricing_and_keeps_feed_limits() -> None:
    override = ModelOverride(
        "a", entry={"upstream_id": "vendor/a-2024", "pricing": {"prompt": "0.000001", "completion": "0.000002"}}
    )

    (offer,) = provider(override).apply_overrides([fetched("a", FEED_PRICING)])

    assert offer.upstream_id == "vendor/a-2024"
    assert offer.pricing == ModelPricing(10**6, 2 * 10**6, context_length=64_000, max_completion_tokens=4096)


def test_apply_overrides_keeps_feed_pricing_when_override_sets_only_limits() -> None:
    (offer,) = provider(ModelOverride("a", entry={"context_length": 1000})).apply_overrides(
        [fetched("a", FEED_PRICING)]
    )

    assert offer.pricing == ModelPricing(100, 200, context_length=1000, max_completion_tokens=1000)


def test_apply_overrides_adds_priced_models_the_feed_lacks_with_provider_fee_and_priority() -> None:
    override = ModelOverride(
        "openai/gpt-4o-mini",
        entry={"context_length": 128000, "pricing": {"prompt": "0.00000015", "completion": "0.0000006"}},
    )

    (offer,) = provider(override).apply_overrides([])

    assert offer.id == "openai/gpt-4o-mini"
    assert offer.pricing == ModelPricing(150_000, 600_000)
    assert (offer.provider_id, offer.priority, offer.fee_ppm) == ("p", 3, 1_100_000)


def test_override_offers_lists_enabled_overrides_only() -> None:
    config = provider(
        ModelOverride("x", entry={"pricing": {"prompt": "0", "completion": "0"}}), ModelOverride("y", enabled=False)
    )

    assert [o.id for o in config.override_offers()] == ["x"]


def test_trusts_reported_cost_only_for_openrouter() -> None:
    assert provider(kind=ProviderType.OPENROUTER).trusts_reported_cost
    assert not provider(kind=ProviderType.OPENAI).trusts_reported_cost
    assert not provider(kind=ProviderType.ANTHROPIC).trusts_reported_cost


def test_default_provider_is_openai_without_trailing_slash() -> None:
    config = default_provider("http://127.0.0.1:9000/v1/", "secret")

    assert (config.id, config.type, config.base_url) == ("default", ProviderType.OPENAI, "http://127.0.0.1:9000/v1")


def test_provider_config_repr_hides_api_key() -> None:
    assert "sekrit" not in repr(default_provider("http://x/v1", "sekrit"))
