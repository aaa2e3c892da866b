"""Model catalogs and upstream providers from files: MODELS_PATH (OpenRouter-shaped) and PROVIDERS_PATH (SPEC §8.2)."""

from app.adapters.catalog.files import (
    CatalogFileError,
    api_key_env_names,
    configured_providers,
    load_models_file,
    load_providers_file,
    offers_from_models_document,
    parse_providers,
    read_json_file,
    static_offers,
)

__all__ = [
    "CatalogFileError",
    "api_key_env_names",
    "configured_providers",
    "load_models_file",
    "load_providers_file",
    "offers_from_models_document",
    "parse_providers",
    "read_json_file",
    "static_offers",
]
