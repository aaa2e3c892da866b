"""Proxy wiring: a fixed BTC_USD_PRICE needs no exchange client; providers become adapters of their type."""

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import structlog.testing

from app.adapters.providers import OpenAiUpstream, OpenRouterUpstream
from app.domain.errors import (
    InsufficientBalanceError,
    InvalidCashuTokenError,
    MintUnreachableError,
    TokenAlreadySpentError,
    UpstreamTimeoutError,
)
from app.domain.services.accounts import AccountService, Caller
from app.domain.services.proxy import CompletedRequest, ProxyRequest
from app.infrastructure.proxy_wiring import (
    LogSettlementObserver,
    build_proxy_services,
    build_upstreams,
    client_status,
    start_proxy_jobs,
    stop_proxy_jobs,
)
from app.infrastructure.settings import load_settings
from tests.fakes.clock import FixedClock
from tests.fakes.ledger import InMemoryLedger
from tests.fakes.upstream import FakeUpstream
from tests.unit.domain.services.test_proxy import Harness

BASE = {"CASHU_MINTS": "http://127.0.0.1:3338", "UPSTREAM_BASE_URL": "http://127.0.0.1:9/v1"}


class NullObserver:
    def request_completed(self, record: CompletedRequest) -> None:
        del record


async def _close(closers: list[Callable[[], Awaitable[None]]]) -> None:
    for close in closers:
        await close()


async def test_fixed_btc_usd_price_builds_no_exchange_client_and_never_goes_stale() -> None:
    settings = load_settings({**BASE, "BTC_USD_PRICE": "65000.5"})

    services = build_proxy_services(
        settings, ledger=InMemoryLedger(), clock=FixedClock(), upstreams={}, observer=NullObserver()
    )

    assert services.rates.is_fixed
    assert services.closers == []
    assert services.rates.current_or_none() == 65_000_500_000


async def test_exchange_rate_without_fixed_price_is_stale_until_refreshed() -> None:
    settings = load_settings(BASE)

    services = build_proxy_services(
        settings, ledger=InMemoryLedger(), clock=FixedClock(), upstreams={}, observer=NullObserver()
    )

    assert not services.rates.is_fixed
    assert services.rates.current_or_none() is None
    assert len(services.closers) == 1
    await _close(services.closers)


async def test_build_upstreams_makes_one_adapter_per_provider_of_its_type(tmp_path: Path) -> None:
    path = tmp_path / "providers.json"
    providers = [
        {"id": "plain", "type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "k1"},
        {"id": "or", "type": "openrouter", "base_url": "http://127.0.0.1:10/api/v1", "api_key": "k2"},
    ]
    path.write_text(json.dumps({"providers": providers}))
    settings = load_settings({**BASE, "PROVIDERS_PATH": str(path)})
    closers: list[Callable[[], Awaitable[None]]] = []

    upstreams = build_upstreams(settings, closers)

    assert isinstance(upstreams["plain"], OpenAiUpstream)
    assert not upstreams["plain"].trusts_reported_cost
    assert isinstance(upstreams["or"], OpenRouterUpstream)
    assert upstreams["or"].trusts_reported_cost
    assert len(closers) == 2
    await _close(closers)


async def test_proxy_jobs_load_the_catalog_then_sweep_every_half_lease_until_stopped() -> None:
    settings = load_settings({**BASE, "BTC_USD_PRICE": "100000", "RESERVATION_LEASE_SECONDS": "1"})
    ledger = InMemoryLedger()
    upstream = FakeUpstream("default", models=[{"id": "v/m", "pricing": {"prompt": "0.000001", "completion": "0"}}])
    services = build_proxy_services(
        settings, ledger=ledger, clock=FixedClock(), upstreams={"default": upstream}, observer=NullObserver()
    )

    tasks = await start_proxy_jobs(settings, services)
    await asyncio.sleep(1.2)
    await stop_proxy_jobs(tasks, services, grace_seconds=0.1)
    sweeps = sum(1 for name, _ in ledger.calls if name == "sweep_expired")
    await asyncio.sleep(0.6)

    assert [o.id for o in services.catalog.current().offers] == ["v/m"]
    assert sweeps >= 2
    assert sum(1 for name, _ in ledger.calls if name == "sweep_expired") == sweeps
    assert all(task.done() for task in tasks)


def test_log_settlement_observer_logs_retry_and_failure_with_ids_and_error_class_only() -> None:
    observer = LogSettlementObserver()

    with structlog.testing.capture_logs() as logs:
        observer.settlement_retry("req-1", 2, 0.2, "StorageUnavailableError")
        observer.settlement_failed("req-1", 5, 1234, "StorageUnavailableError")

    assert [(e["event"], e["log_level"], e["request_id"]) for e in logs] == [
        ("settlement_retry", "warning", "req-1"),
        ("settlement_failed", "error", "req-1"),
    ]
    assert logs[0]["delay_seconds"] == 0.2
    assert logs[1]["charge_msat"] == 1234


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (TokenAlreadySpentError("spent"), 400),
        (InvalidCashuTokenError("bad"), 400),
        (MintUnreachableError("down"), 503),
        (InsufficientBalanceError("short"), 402),
        (UpstreamTimeoutError("slow"), 504),
        (asyncio.CancelledError(), 499),
        (RuntimeError("bug"), 500),
    ],
)
def test_client_status_is_the_status_the_api_answers_for_the_error(error: BaseException, status: int) -> None:
    assert client_status(error) == status


class SpentTokenAccounts(AccountService):
    """Accounts whose Cashu-token credential was already spent at the mint (what RedemptionService raises)."""

    async def authenticate(self, authorization: str | None) -> Caller:
        del authorization
        msg = "The Cashu token was already spent"
        raise TokenAlreadySpentError(msg)


async def test_request_completed_logs_the_client_status_of_a_cashu_refusal() -> None:
    harness = Harness({"a": FakeUpstream("a")}, refusal_status=client_status, accounts=SpentTokenAccounts)
    request = ProxyRequest(
        path="/chat/completions",
        body=json.dumps({"model": "vendor/model-a", "messages": []}).encode(),
        headers=[],
        authorization="Bearer cashuBspent",
        request_id="req-cashu",
    )

    with pytest.raises(TokenAlreadySpentError):
        await harness.service.handle(request)

    assert [(r.request_id, r.status) for r in harness.observer.records] == [("req-cashu", 400)]
