"""MODELS_PATH and PROVIDERS_PATH files read from disk into offers and provider configs."""

import json
from pathlib import Path

import pytest

from app.adapters.catalog import (
    CatalogFileError,
    api_key_env_names,
    configured_providers,
    load_models_file,
    load_providers_file,
    offers_from_models_document,
    parse_providers,
    static_offers,
)
from app.domain.pricing import ModelPricing
from app.domain.provider_config import ProviderType, default_provider

SPEC_PROVIDERS = {
    "providers": [
        {
            "id": "or",
            "type": "openrouter",
            "base_url": "https://openrouter.ai/api/v1",
            "api_key_env": "OPENROUTER_API_KEY",
            "fee": "1.05",
            "priority": 0,
            "models": {
                "openai/gpt-4o-mini": {
                    "enabled": True,
                    "upstream_id": "openai/gpt-4o-mini",
                    "context_length": 128000,
                    "pricing": {"prompt": "0.00000015", "completion": "0.0000006"},
                }
            },
        },
        {"id": "local", "base_url": "http://127.0.0.1:9999/v1/", "api_key": "sk-local", "priority": 5},
    ]
}

MODELS = [
    {
        "id": "openai/gpt-4o",
        "name": "GPT-4o",
        "context_length": 128000,
        "architecture": {"modality": "text+image->text", "input_modalities": ["text", "image"]},
        "pricing": {
            "prompt": "0.0000025",
            "completion": "0.00001",
            "request": "0",
            "image": "0.003613",
            "input_cache_read": "0.00000125",
        },
        "top_provider": {"context_length": 128000, "max_completion_tokens": 16384, "is_moderated": True},
    },
    {
        "id": "local/llama",
        "provider": "local",
        "upstream_id": "llama3:8b",
        "context_length": 8192,
        "pricing": {"prompt": "0", "completion": "0"},
    },
    {"id": "mystery", "name": "No price"},
]


def write(tmp_path: Path, name: str, document: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document), encoding="utf-8")
    return str(path)


def test_load_providers_file_parses_the_spec_example(tmp_path: Path) -> None:
    path = write(tmp_path, "providers.json", SPEC_PROVIDERS)

    openrouter, local = load_providers_file(path, {"OPENROUTER_API_KEY": "sk-or-secret"})

    assert (openrouter.id, openrouter.type, openrouter.base_url) == (
        "or",
        ProviderType.OPENROUTER,
        "https://openrouter.ai/api/v1",
    )
    assert openrouter.api_key == "sk-or-secret"
    assert openrouter.fee_ppm == 1_050_000
    assert openrouter.models[0].model_id == "openai/gpt-4o-mini"
    assert (local.type, local.base_url, local.api_key, local.fee_ppm, local.priority) == (
        ProviderType.OPENAI,
        "http://127.0.0.1:9999/v1",
        "sk-local",
        None,
        5,
    )


def test_api_key_env_names_lists_referenced_variables() -> None:
    assert api_key_env_names(SPEC_PROVIDERS) == ["OPENROUTER_API_KEY"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "at least one provider"),
        ({"providers": []}, "at least one provider"),
        ({"providers": [{"base_url": "http://x/v1"}]}, "no string id"),
        ({"providers": [{"id": "a", "base_url": "http://x/v1"}, {"id": "a", "base_url": "http://y/v1"}]}, "twice"),
        ({"providers": [{"id": "a", "type": "gemini", "base_url": "http://x/v1"}]}, "type must be"),
        ({"providers": [{"id": "a", "base_url": "ftp://x"}]}, "base_url"),
        ({"providers": [{"id": "a", "base_url": "http://x/v1", "fee": "0.9"}]}, "at least 1"),
        ({"providers": [{"id": "a", "base_url": "http://x/v1", "fee": "cheap"}]}, "decimal multiplier"),
        ({"providers": [{"id": "a", "base_url": "http://x/v1", "priority": "1"}]}, "priority"),
        ({"providers": [{"id": "a", "base_url": "http://x/v1", "api_key_env": "MISSING_KEY"}]}, "MISSING_KEY"),
        ({"providers": [{"id": "a", "base_url": "http://x/v1", "models": []}]}, "models must be"),
        ({"providers": [{"id": "a", "base_url": "http://x/v1", "models": {"m": {"enabled": "no"}}}]}, "enabled"),
    ],
)
def test_parse_providers_raises_catalog_file_error_when_invalid(document: object, message: str) -> None:
    with pytest.raises(CatalogFileError, match=message):
        parse_providers(document, {})


def test_parse_providers_never_echoes_a_key_in_errors() -> None:
    document = {"providers": [{"id": "a", "base_url": "nope", "api_key": "sk-very-secret"}]}

    with pytest.raises(CatalogFileError) as caught:
        parse_providers(document, {})

    assert "sk-very-secret" not in str(caught.value)


def test_load_providers_file_raises_catalog_file_error_when_file_missing_or_not_json(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")

    with pytest.raises(CatalogFileError, match="cannot read"):
        load_providers_file(str(tmp_path / "absent.json"), {})
    with pytest.raises(CatalogFileError, match="not valid JSON"):
        load_providers_file(str(broken), {})


@pytest.mark.parametrize("wrap", [True, False])
def test_load_models_file_reads_data_object_or_list(tmp_path: Path, wrap: bool) -> None:
    providers = parse_providers(SPEC_PROVIDERS, {"OPENROUTER_API_KEY": "k"})
    path = write(tmp_path, "models.json", {"data": MODELS} if wrap else MODELS)

    offers = {o.id: o for o in load_models_file(path, providers)}

    assert set(offers) == {"openai/gpt-4o", "mystery", "local/llama", "openai/gpt-4o-mini"}
    gpt4o = offers["openai/gpt-4o"]
    assert gpt4o.provider_id == "or"
    assert gpt4o.fee_ppm == 1_050_000
    assert gpt4o.is_moderated
    assert gpt4o.architecture["modality"] == "text+image->text"
    assert gpt4o.pricing == ModelPricing(
        prompt=2_500_000,
        completion=10_000_000,
        image=3_613_000_000,
        cache_read=1_250_000,
        cache_write=2_500_000,
        context_length=128_000,
        max_completion_tokens=16_384,
    )
    assert offers["mystery"].pricing is None
    llama = offers["local/llama"]
    assert (llama.provider_id, llama.upstream_id, llama.priority) == ("local", "llama3:8b", 5)
    assert llama.pricing == ModelPricing(0, 0, context_length=8192)
    assert offers["openai/gpt-4o-mini"].pricing == ModelPricing(150_000, 600_000)  # from the override


def test_offers_from_models_document_serve_with_the_first_provider_by_default() -> None:
    providers = [default_provider("http://127.0.0.1:1/v1", None)]

    offers = offers_from_models_document({"data": [MODELS[0]]}, providers)

    assert [(o.id, o.provider_id, o.upstream_id) for o in offers] == [("openai/gpt-4o", "default", "openai/gpt-4o")]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"models": []}, "expected"),
        ("nope", "expected"),
        ([{"name": "no id"}], "no string id"),
        ([{"id": "m", "provider": "ghost"}], "unknown provider"),
    ],
)
def test_load_models_file_raises_catalog_file_error_when_malformed(
    tmp_path: Path, document: object, message: str
) -> None:
    path = write(tmp_path, "models.json", document)

    with pytest.raises(CatalogFileError, match=message):
        load_models_file(path, [default_provider("http://127.0.0.1:1/v1", None)])


def test_configured_providers_prefers_the_providers_file(tmp_path: Path) -> None:
    path = write(tmp_path, "providers.json", SPEC_PROVIDERS)

    from_file = configured_providers(
        path, upstream_base_url="http://u/v1", upstream_api_key="k", api_keys={"OPENROUTER_API_KEY": "x"}
    )
    from_env = configured_providers(None, upstream_base_url="http://u/v1", upstream_api_key="k", api_keys={})
    none = configured_providers(None, upstream_base_url=None, upstream_api_key=None, api_keys={})

    assert [p.id for p in from_file] == ["or", "local"]
    assert [(p.id, p.base_url, p.api_key) for p in from_env] == [("default", "http://u/v1", "k")]
    assert none == []


def test_static_offers_come_from_models_file_or_overrides(tmp_path: Path) -> None:
    providers = parse_providers(SPEC_PROVIDERS, {"OPENROUTER_API_KEY": "k"})
    path = write(tmp_path, "models.json", {"data": [MODELS[0]]})

    from_file = static_offers(path, providers)
    from_overrides = static_offers(None, providers)

    assert sorted(o.id for o in from_file) == ["openai/gpt-4o", "openai/gpt-4o-mini"]
    assert [o.id for o in from_overrides] == ["openai/gpt-4o-mini"]
