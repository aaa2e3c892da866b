"""Catalog lookup (SPEC §8.1) and OpenRouter entries to offers (SPEC §4.2)."""

import pytest

from app.domain.catalog import Catalog, ModelOffer, match_keys, offer_from_openrouter, pricing_from_openrouter
from app.domain.pricing import ModelPricing

PRICE = ModelPricing(prompt=1, completion=2)


def _offer(model_id: str, provider: str = "p", priority: int = 0) -> ModelOffer:
    return ModelOffer(id=model_id, provider_id=provider, upstream_id=model_id, pricing=PRICE, priority=priority)


@pytest.mark.parametrize(
    ("requested", "level"),
    [
        ("openai/gpt-4o-2024-08-06", 0),
        ("OpenAI/GPT-4o-2024-08-06", 0),
        ("gpt-4o-2024-08-06", 1),
        ("other/gpt-4o-2024-08-06", 1),
        ("gpt-4o", 2),
        ("gpt-4o-20240806", 2),
    ],
)
def test_lookup_matches_exact_then_without_vendor_then_without_date(requested: str, level: int) -> None:
    catalog = Catalog([_offer("openai/gpt-4o-2024-08-06")])

    found = catalog.lookup(requested)

    assert [(m.level, m.offer.id) for m in found] == [(level, "openai/gpt-4o-2024-08-06")]


def test_lookup_returns_nothing_for_unknown_model() -> None:
    assert Catalog([_offer("a/b")]).lookup("c") == []


def test_lookup_lists_each_offer_once_at_its_best_level() -> None:
    exact, bare = _offer("vendor/m", "p1"), _offer("m", "p2")
    catalog = Catalog([exact, bare])

    found = catalog.lookup("vendor/m")

    assert [(m.level, m.offer.provider_id) for m in found] == [(0, "p1"), (1, "p2")]


def test_listed_keeps_one_offer_per_id_preferring_lower_priority() -> None:
    catalog = Catalog([_offer("a/x", "slow", 5), _offer("a/x", "fast", 1), _offer("a/y")])

    listed = catalog.listed()

    assert [(o.id, o.provider_id) for o in listed] == [("a/x", "fast"), ("a/y", "p")]
    assert catalog.get("A/X") == listed[0]
    assert catalog.get("x") is None


def test_match_keys_strip_vendor_and_date_suffix() -> None:
    assert match_keys("Anthropic/Claude-3-5-Sonnet-20241022") == (
        "anthropic/claude-3-5-sonnet-20241022",
        "claude-3-5-sonnet-20241022",
        "claude-3-5-sonnet",
    )


def test_pricing_from_openrouter_reads_prices_and_limits() -> None:
    entry = {
        "id": "a/b",
        "context_length": 1000,
        "pricing": {"prompt": "0.000001", "completion": "0.000002", "input_cache_read": "0.0000001"},
        "top_provider": {"context_length": 800, "max_completion_tokens": 100},
    }

    pricing = pricing_from_openrouter(entry)

    assert pricing == ModelPricing(
        prompt=1_000_000, completion=2_000_000, cache_read=100_000, context_length=800, max_completion_tokens=100
    )


@pytest.mark.parametrize(
    "prices", [{}, {"prompt": "0.1"}, {"prompt": "-1", "completion": "0"}, {"prompt": True, "completion": "0"}]
)
def test_pricing_from_openrouter_is_none_without_usable_price(prices: dict[str, object]) -> None:
    assert pricing_from_openrouter({"id": "a", "pricing": prices}) is None


def test_offer_from_openrouter_defaults_upstream_id_and_owner() -> None:
    offer = offer_from_openrouter({"id": "vendor/m", "name": "M", "created": 5}, provider_id="p", priority=2)

    assert offer is not None
    assert (offer.upstream_id, offer.owned_by, offer.name, offer.created, offer.priority) == (
        "vendor/m",
        "vendor",
        "M",
        5,
        2,
    )
    assert offer.pricing is None
    assert offer_from_openrouter({"name": "no id"}, provider_id="p") is None
