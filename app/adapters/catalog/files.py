"""Read MODELS_PATH and PROVIDERS_PATH JSON into domain offers and provider configs; bad files stop startup."""

import json
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from app.domain.catalog import ModelOffer
from app.domain.provider_config import (
    DEFAULT_ANTHROPIC_VERSION,
    ModelOverride,
    ProviderConfig,
    ProviderType,
    default_provider,
)

PPM: Final = 1_000_000


class CatalogFileError(ValueError):
    """A models or providers file that cannot be read or does not have the documented shape.

    The message names the file's role and the offending entry, never an API key.
    """


def read_json_file(path: str, role: str) -> object:
    """Parse a JSON file. Raises CatalogFileError naming `role` (`MODELS_PATH`, `PROVIDERS_PATH`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"{role}: cannot read {path}: {exc.strerror or type(exc).__name__}"
        raise CatalogFileError(msg) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        msg = f"{role}: {path} is not valid JSON ({exc})"
        raise CatalogFileError(msg) from None


# -- MODELS_PATH -----------------------------------------------------------------------------------------------------
def offers_from_models_document(document: object, providers: Sequence[ProviderConfig]) -> list[ModelOffer]:
    """Offers from an OpenRouter-shaped catalog: `{"data": [...]}` or a list of entries (SPEC §4.2).

    Each entry is served by the provider named in its `provider` field, else by the first provider. The
    providers' per-model overrides are applied on top (they win). Entries without a usable price become
    unpriced offers (offered only under fixed pricing). Raises CatalogFileError for a bad shape, an entry without
    a string `id`, or an unknown provider.
    """
    if not providers:
        msg = "MODELS_PATH: no upstream provider is configured to serve these models"
        raise CatalogFileError(msg)
    entries = document.get("data") if isinstance(document, Mapping) else document
    if not isinstance(entries, list):
        msg = 'MODELS_PATH: expected {"data": [...]} or a list of models'
        raise CatalogFileError(msg)
    by_id = {p.id: p for p in providers}
    grouped: dict[str, list[ModelOffer]] = {p.id: [] for p in providers}
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), str) or not entry["id"]:
            msg = f"MODELS_PATH: model #{index} has no string id"
            raise CatalogFileError(msg)
        provider_id = entry.get("provider")
        if provider_id is None:
            provider = providers[0]
        elif isinstance(provider_id, str) and provider_id in by_id:
            provider = by_id[provider_id]
        else:
            msg = f"MODELS_PATH: model {entry['id']!r} names unknown provider {provider_id!r}"
            raise CatalogFileError(msg)
        offer = provider.offer(entry)
        if offer is not None:
            grouped[provider.id].append(offer)
    return [offer for provider in providers for offer in provider.apply_overrides(grouped[provider.id])]


def load_models_file(path: str, providers: Sequence[ProviderConfig]) -> list[ModelOffer]:
    """`offers_from_models_document` of the file at `path`. Raises CatalogFileError."""
    return offers_from_models_document(read_json_file(path, "MODELS_PATH"), providers)


# -- PROVIDERS_PATH --------------------------------------------------------------------------------------------------
def _provider_entries(document: object) -> list[Mapping[str, object]]:
    entries = document.get("providers") if isinstance(document, Mapping) else None
    if not isinstance(entries, list) or not entries:
        msg = 'PROVIDERS_PATH: expected {"providers": [...]} with at least one provider'
        raise CatalogFileError(msg)
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            msg = f"PROVIDERS_PATH: provider #{index} is not an object"
            raise CatalogFileError(msg)
    return entries


def api_key_env_names(document: object) -> list[str]:
    """The environment variable names the providers file refers to through `api_key_env`, in order.

    For settings.py, which resolves them (adapters never read the environment).
    """
    names: list[str] = []
    for entry in _provider_entries(document):
        name = entry.get("api_key_env")
        if isinstance(name, str) and name and name not in names:
            names.append(name)
    return names


def _fee_ppm(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        msg = f'{where}: fee must be a decimal multiplier such as "1.05"'
        raise CatalogFileError(msg)
    try:
        fee = Fraction(repr(value) if isinstance(value, float) else str(value).strip())
    except (ValueError, ZeroDivisionError):
        msg = f'{where}: fee must be a decimal multiplier such as "1.05"'
        raise CatalogFileError(msg) from None
    if fee < 1:
        msg = f"{where}: fee must be at least 1"
        raise CatalogFileError(msg)
    scaled = fee * PPM
    return -(-scaled.numerator // scaled.denominator)  # a fee never undercharges by rounding


def _base_url(value: object, where: str) -> str:
    if isinstance(value, str):
        parts = urlsplit(value.strip())
        if parts.scheme in {"http", "https"} and parts.netloc:
            return value.strip().rstrip("/")
    msg = f"{where}: base_url must be an http(s) URL"
    raise CatalogFileError(msg)


def _api_key(entry: Mapping[str, object], api_keys: Mapping[str, str], where: str) -> str | None:
    key = entry.get("api_key")
    if isinstance(key, str) and key:
        return key
    if key is not None:
        msg = f"{where}: api_key must be a string"
        raise CatalogFileError(msg)
    env_name = entry.get("api_key_env")
    if env_name is None:
        return None
    if not isinstance(env_name, str) or not env_name:
        msg = f"{where}: api_key_env must be a variable name"
        raise CatalogFileError(msg)
    value = api_keys.get(env_name)
    if not value:
        msg = f"{where}: {env_name} (api_key_env) is not set"
        raise CatalogFileError(msg)
    return value


def _overrides(value: object, where: str) -> tuple[ModelOverride, ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        msg = f"{where}: models must be an object keyed by model id"
        raise CatalogFileError(msg)
    overrides: list[ModelOverride] = []
    for model_id, entry in value.items():
        if not isinstance(model_id, str) or not model_id or not isinstance(entry, Mapping):
            msg = f"{where}: models[{model_id!r}] must be an object"
            raise CatalogFileError(msg)
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            msg = f"{where}: models[{model_id!r}].enabled must be true or false"
            raise CatalogFileError(msg)
        overrides.append(ModelOverride(model_id=model_id, enabled=enabled, entry=dict(entry)))
    return tuple(overrides)


def parse_providers(document: object, api_keys: Mapping[str, str]) -> list[ProviderConfig]:
    """Provider configs from a PROVIDERS_PATH document (SPEC §8.2).

    `api_keys` maps the variable names of `api_key_env` to their values (resolved by settings.py). Raises
    CatalogFileError for a missing or duplicate id, an unknown type, a bad URL, fee or priority, or an unset key.
    """
    providers: list[ProviderConfig] = []
    for index, entry in enumerate(_provider_entries(document)):
        provider_id = entry.get("id")
        if not isinstance(provider_id, str) or not provider_id:
            msg = f"PROVIDERS_PATH: provider #{index} has no string id"
            raise CatalogFileError(msg)
        where = f"PROVIDERS_PATH: provider {provider_id!r}"
        if any(p.id == provider_id for p in providers):
            msg = f"{where} is listed twice"
            raise CatalogFileError(msg)
        try:
            kind = ProviderType(str(entry.get("type", "openai")))
        except ValueError:
            msg = f"{where}: type must be one of openai, openrouter, anthropic"
            raise CatalogFileError(msg) from None
        priority = entry.get("priority", 0)
        if type(priority) is not int:
            msg = f"{where}: priority must be an integer"
            raise CatalogFileError(msg)
        version = entry.get("anthropic_version", DEFAULT_ANTHROPIC_VERSION)
        if not isinstance(version, str) or not version:
            msg = f"{where}: anthropic_version must be a string"
            raise CatalogFileError(msg)
        providers.append(
            ProviderConfig(
                id=provider_id,
                type=kind,
                base_url=_base_url(entry.get("base_url"), where),
                api_key=_api_key(entry, api_keys, where),
                fee_ppm=_fee_ppm(entry.get("fee"), where),
                priority=priority,
                anthropic_version=version,
                models=_overrides(entry.get("models"), where),
            )
        )
    return providers


def load_providers_file(path: str, api_keys: Mapping[str, str]) -> list[ProviderConfig]:
    """`parse_providers` of the file at `path`. Raises CatalogFileError."""
    return parse_providers(read_json_file(path, "PROVIDERS_PATH"), api_keys)


def configured_providers(
    providers_path: str | None,
    *,
    upstream_base_url: str | None,
    upstream_api_key: str | None,
    api_keys: Mapping[str, str],
) -> list[ProviderConfig]:
    """The node's upstreams: the PROVIDERS_PATH file when set (it replaces UPSTREAM_*), else the `default`
    `openai` provider from UPSTREAM_BASE_URL/UPSTREAM_API_KEY, else none. Raises CatalogFileError."""
    if providers_path:
        return load_providers_file(providers_path, api_keys)
    if upstream_base_url:
        return [default_provider(upstream_base_url, upstream_api_key)]
    return []


def static_offers(models_path: str | None, providers: Sequence[ProviderConfig]) -> list[ModelOffer]:
    """Offers that do not come from an upstream feed: MODELS_PATH (when set, the only models offered) with
    overrides applied, else the providers' override offers. Raises CatalogFileError."""
    if models_path:
        return load_models_file(models_path, providers)
    return [offer for provider in providers for offer in provider.override_offers()]
