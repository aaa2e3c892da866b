"""GET /v1/models and /v1/models/{id}: the OpenRouter-shaped catalog plus `sats_pricing` (SPEC §9)."""

from fractions import Fraction

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from app.domain.pricing import format_pusd
from app.domain.services.models import ListedModel, ModelCatalogService


class Model(msgspec.Struct, frozen=True, kw_only=True):
    """One `/v1/models` entry. Keys are the OpenRouter names clients parse; prices are open-ended maps."""

    id: str
    object_type: str = msgspec.field(name="object")
    created: int
    owned_by: str
    name: str
    description: str
    context_length: int
    architecture: dict[str, object]
    pricing: dict[str, str]
    sats_pricing: dict[str, float] | None
    top_provider: dict[str, object]
    per_request_limits: None
    enabled: bool
    upstream_provider_id: str

    @classmethod
    def from_domain(cls, listed: ListedModel) -> "Model":
        offer, prices, pricing = listed.offer, listed.prices, listed.pricing
        usd = {
            "prompt": prices.usd_prompt,
            "completion": prices.usd_completion,
            "request": prices.usd_request,
            "image": prices.usd_image,
            "input_cache_read": prices.usd_cache_read,
            "input_cache_write": prices.usd_cache_write,
            "max_prompt_cost": prices.usd_max_prompt_cost,
            "max_completion_cost": prices.usd_max_completion_cost,
            "max_cost": prices.usd_max_cost,
        }
        sats: dict[str, Fraction | None] = {
            "prompt": prices.sats_prompt,
            "completion": prices.sats_completion,
            "request": prices.sats_request,
            "image": prices.sats_image,
            "input_cache_read": prices.sats_cache_read,
            "input_cache_write": prices.sats_cache_write,
            "max_prompt_cost": prices.sats_max_prompt_cost,
            "max_completion_cost": prices.sats_max_completion_cost,
            "max_cost": prices.sats_max_cost,
        }
        sats_pricing = None if any(v is None for v in sats.values()) else {k: float(v or 0) for k, v in sats.items()}
        architecture = {
            "modality": "text->text",
            "input_modalities": ["text"],
            "output_modalities": ["text"],
            "tokenizer": "Other",
            "instruct_type": None,
            **offer.architecture,
        }
        return cls(
            id=offer.id,
            object_type="model",
            created=offer.created,
            owned_by=offer.owned_by,
            name=offer.name,
            description=offer.description,
            context_length=pricing.context_length,
            architecture=architecture,
            pricing={k: format_pusd(v) for k, v in usd.items()},
            sats_pricing=sats_pricing,
            top_provider={
                "context_length": pricing.context_length,
                "max_completion_tokens": pricing.max_completion_tokens,
                "is_moderated": offer.is_moderated,
            },
            per_request_limits=None,
            enabled=True,
            upstream_provider_id=offer.provider_id,
        )


class ModelList(msgspec.Struct, frozen=True, kw_only=True):
    object_type: str = msgspec.field(name="object")
    data: list[Model]


class ModelsController(Controller):
    path = "/"
    tags = ("models",)

    @get(["/v1/models", "/models"])
    async def list_models(self, models: NamedDependency[ModelCatalogService]) -> ModelList:
        """Every offered model with prices including fees; `sats_pricing` is null while the rate is stale."""
        return ModelList(object_type="list", data=[Model.from_domain(m) for m in models.list_models()])

    @get(["/v1/models/{model_id:path}", "/models/{model_id:path}"])
    async def get_model(self, model_id: FromPath[str], models: NamedDependency[ModelCatalogService]) -> Model:
        """One model by id; 404 `model_not_found` when it is not offered."""
        return Model.from_domain(models.get_model(model_id.lstrip("/")))
