"""The Litestar application factory."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.openapi.config import OpenAPIConfig

from app.api.controllers.balance import BalanceController, WalletAliasController
from app.api.controllers.health import HealthController
from app.api.controllers.info import InfoController
from app.api.controllers.models import ModelsController
from app.api.controllers.providers import ProvidersController
from app.api.controllers.proxy import LogRequestObserver, ProxyController
from app.api.errors import EXCEPTION_HANDLERS
from app.api.request_id import add_request_id_header, bind_request_context
from app.domain.node import VERSION
from app.domain.services.xcashu import PaymentModeObserver
from app.infrastructure.container import Adapters, account_service, build_adapters, dependencies
from app.infrastructure.logging import configure_logging
from app.infrastructure.nostr_jobs import NostrJobs
from app.infrastructure.proxy_wiring import build_proxy_services, start_proxy_jobs, stop_proxy_jobs
from app.infrastructure.reconciler_jobs import ReconcilerJob
from app.infrastructure.settings import Settings, load_settings
from app.infrastructure.xcashu_wiring import build_x_cashu, x_cashu_dependencies

MAX_BODY_BYTES = 25 * 1024 * 1024
EXPOSED_HEADERS = [
    "x-routstr-request-id",
    "x-cashu",
    "x-routstr-cost-msats",
    "x-routstr-cost-usd",
    "x-routstr-input-cost-msats",
    "x-routstr-output-cost-msats",
    "x-routstr-change-pending",
    "retry-after",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
]


def _cors(settings: Settings) -> CORSConfig:
    wildcard = "*" in settings.cors_origins
    return CORSConfig(
        allow_origins=list(settings.cors_origins),
        allow_credentials=not wildcard,  # never credentials for '*'
        expose_headers=EXPOSED_HEADERS,
    )


def create_app(settings: Settings, adapters: Adapters | None = None) -> Litestar:
    """Wire the app. Tests pass fakes in `adapters`; production builds the real ones."""
    wired = adapters if adapters is not None else build_adapters(settings)
    nostr = NostrJobs.build(settings, wired)
    modes = PaymentModeObserver(LogRequestObserver())  # `payment_mode="x_cashu"` on X-Cashu requests
    proxy = build_proxy_services(
        settings,
        ledger=wired.ledger,
        clock=wired.clock,
        upstreams=wired.upstreams,
        observer=modes,
        accounts=account_service(settings, wired),  # token as key on paid routes too
    )
    paid = build_x_cashu(settings, wired, proxy.proxy, modes)
    reconciler = ReconcilerJob.build(settings, wired)  # SPEC §7.4; None without Cashu adapters

    @asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        nostr.start()  # background tasks only: relays never delay startup
        proxy_tasks = await start_proxy_jobs(settings, proxy)
        if reconciler is not None:
            reconciler.start()
        try:
            yield
        finally:
            if reconciler is not None:
                await reconciler.stop()
            await stop_proxy_jobs(proxy_tasks, proxy, grace_seconds=30)
            await nostr.stop()
            await wired.close()

    return Litestar(
        route_handlers=[
            InfoController,
            HealthController,
            BalanceController,
            WalletAliasController,
            ProvidersController,
            ModelsController,
            ProxyController,
        ],
        dependencies={
            **dependencies(settings, wired),
            **nostr.dependencies(),
            **proxy.dependencies(),
            **x_cashu_dependencies(paid),
        },
        state=State({"nostr_jobs": nostr}),
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]  # handlers take Exception subclasses
        before_request=bind_request_context,
        before_send=[add_request_id_header],
        cors_config=_cors(settings),
        lifespan=[lifespan],
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=OpenAPIConfig(title="routstr-core", version=VERSION),
        logging_config=None,  # configure_logging owns logging; Litestar must not reset the root level
        debug=False,
    )


def create_app_from_env() -> Litestar:
    """Production entry point: `uvicorn --factory app.infrastructure.app:create_app_from_env`."""
    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(settings)
