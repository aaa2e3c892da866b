"""Nostr background jobs: publish the listing to each relay (24 h cycle, per-relay backoff) and refresh discovery.

Started from the app lifespan without awaiting any relay, so relays never delay startup or requests. Publishing is a
leased job (SPEC §3): with a shared lease store only the instance holding `nostr_publish` publishes.
"""

import asyncio
import random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Final

import structlog
from litestar.di import Provide

from app.domain.errors import RelayError
from app.domain.node import VERSION
from app.domain.nostr import Listing, backoff_seconds, default_provider_id
from app.domain.ports import Clock, EventSigner, Relay
from app.domain.services.leases import LeasedJob
from app.domain.services.nostr import AnnouncementPublisher, DiscoveryService
from app.infrastructure.container import Adapters
from app.infrastructure.settings import Settings

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)

MIN_RECHECK_SECONDS: Final = 60
PUBLISH_LEASE_NAME: Final = "nostr_publish"
# The holder keeps the lease until its next wake-up plus this margin (which also covers one publish attempt).
PUBLISH_LEASE_MARGIN_SECONDS: Final = 300
# How often an instance that does not hold the lease checks whether it lapsed.
STANDBY_RETRY_SECONDS: Final = 60

Sleep = Callable[[float], Awaitable[None]]


def _uniform_jitter() -> float:
    return random.SystemRandom().uniform(-1.0, 1.0)


def listing_for(settings: Settings, public_key: str) -> Listing:
    return Listing.create(
        provider_id=settings.provider_id or default_provider_id(public_key),
        endpoints=(settings.http_url, settings.onion_url),
        mints=settings.trusted_mints,
        version=VERSION,
        name=settings.name,
        about=settings.description,
    )


class NostrJobs:
    """Owns the discovery cache (shared with the API) and the background tasks. `sleep` and `jitter` are
    injectable so tests can drive the schedule without waiting."""

    def __init__(
        self,
        *,
        relays: Sequence[Relay],
        discovery: DiscoveryService,
        publisher: AnnouncementPublisher | None,
        publish_skipped: str | None,
        refresh_interval_seconds: int,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = _uniform_jitter,
        publish_lease: LeasedJob | None = None,
    ) -> None:
        self.relays = tuple(relays)
        self.discovery = discovery
        self.publisher = publisher
        self.publish_skipped = publish_skipped
        self._refresh_interval = refresh_interval_seconds
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self.publish_lease = publish_lease
        self.leading: bool | None = None  # last known answer of the publish lease; None before the first
        self.tasks: list[asyncio.Task[None]] = []

    @classmethod
    def build(cls, settings: Settings, adapters: Adapters) -> "NostrJobs":
        signer: EventSigner | None = adapters.nostr_signer
        listing = listing_for(settings, signer.public_key) if signer is not None else None
        skipped: str | None = None
        if signer is None:
            skipped = "NSEC is not set"
        elif listing is None or not listing.publishable:
            skipped = "no public HTTP_URL or ONION_URL to announce (loopback URLs are never announced)"
        elif not adapters.relays:
            skipped = "RELAYS is empty"
        publisher = (
            AnnouncementPublisher(listing, signer, adapters.signature_verifier, adapters.clock)
            if skipped is None and signer is not None and listing is not None
            else None
        )
        enabled = settings.providers_refresh_interval_seconds > 0
        lease = (
            LeasedJob(
                adapters.job_leases,
                adapters.clock,
                name=PUBLISH_LEASE_NAME,
                holder=adapters.instance_id,
                margin_seconds=PUBLISH_LEASE_MARGIN_SECONDS,
            )
            if adapters.job_leases is not None
            else None
        )
        return cls(
            relays=adapters.relays,
            discovery=DiscoveryService(adapters.relays, adapters.signature_verifier, enabled=enabled),
            publisher=publisher,
            publish_skipped=skipped,
            refresh_interval_seconds=settings.providers_refresh_interval_seconds,
            clock=adapters.clock,
            publish_lease=lease,
        )

    def dependencies(self) -> dict[str, Provide]:
        """The discovery service the providers controller reads; the same instance the refresh job fills."""
        discovery = self.discovery

        def provide() -> DiscoveryService:
            return discovery

        return {"discovery": Provide(provide, use_cache=True, sync_to_thread=False)}

    def start(self) -> None:
        """Create the tasks and return at once."""
        if self.publisher is None:
            log.info("nostr_publish_skipped", reason=self.publish_skipped)
        else:
            for relay in self.relays:
                self._spawn(self.publish_loop(relay), f"nostr-publish:{relay.url}")
        if self.discovery.enabled and self.relays:
            self._spawn(self.discovery_loop(), "nostr-discovery")

    def _spawn(self, job: Coroutine[Any, Any, None], name: str) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(job, name=name))

    async def stop(self) -> None:
        """Cancel the tasks, then hand the publish lease back so another instance can take over at once."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        if self.publish_lease is not None and self.leading:
            self.leading = None
            try:
                await self.publish_lease.release()
            except Exception as exc:  # the lease then simply lapses
                log.warning("nostr_publish_lease_release_failed", error_type=type(exc).__name__)

    async def _hold_publish_lease(self, next_run_in_seconds: float) -> bool:
        """Take or renew the publish lease to cover the next `next_run_in_seconds`; True when this instance holds it.

        Without a lease store the process is the only instance. A store error counts as not holding.
        """
        if self.publish_lease is None:
            return True
        try:
            held = await self.publish_lease.hold(next_run_in_seconds)
        except Exception as exc:
            log.warning("nostr_publish_lease_failed", error_type=type(exc).__name__)
            held = False
        if held != self.leading:
            log.info(
                "nostr_publish_lease_taken" if held else "nostr_publish_lease_not_held",
                lease=self.publish_lease.name,
                holder=self.publish_lease.holder,
            )
        self.leading = held
        return held

    async def publish_loop(self, relay: Relay) -> None:
        """Publish to one relay forever: after success wait until the copy is 24 h old, after failure back off.

        Each cycle first takes or renews the publish lease; an instance that does not hold it skips the cycle and
        checks again after STANDBY_RETRY_SECONDS. After a cycle the holder renews the lease to cover its sleep.
        """
        assert self.publisher is not None  # noqa: S101 - only started with a publisher
        failures = 0
        while True:
            if not await self._hold_publish_lease(0):
                await self._sleep(STANDBY_RETRY_SECONDS)
                continue
            try:
                outcome = await self.publisher.publish_to(relay)
            except RelayError as exc:
                failures += 1
                delay = backoff_seconds(failures, self._jitter())
                log.warning("nostr_publish_failed", relay=relay.url, error=exc.message, retry_in_seconds=round(delay))
            except Exception as exc:  # a bug must not kill the job silently
                failures += 1
                delay = backoff_seconds(failures, self._jitter())
                log.exception("nostr_publish_crashed", relay=relay.url, error_type=type(exc).__name__)
            else:
                failures = 0
                log.info(
                    "nostr_published" if outcome.published else "nostr_publish_unchanged",
                    relay=relay.url,
                    event_id=outcome.event.id,
                    created_at=outcome.event.created_at,
                )
                now = int(self._clock.now().timestamp())
                delay = max(outcome.next_due - now, MIN_RECHECK_SECONDS)
            if not await self._hold_publish_lease(delay):
                delay = min(delay, STANDBY_RETRY_SECONDS)  # lost it: check again like any standby instance
            await self._sleep(delay)

    async def discovery_loop(self) -> None:
        """Refresh the discovery cache now, then every PROVIDERS_REFRESH_INTERVAL_SECONDS."""
        while True:
            try:
                report = await self.discovery.refresh()
            except Exception as exc:  # a bug must not kill the job silently
                log.exception("nostr_discovery_crashed", error_type=type(exc).__name__)
            else:
                log.info(
                    "nostr_discovery_refreshed",
                    relays_ok=report.relays_ok,
                    relays_failed=report.relays_failed,
                    providers=report.providers,
                    dropped_malformed=report.dropped_malformed,
                    dropped_unverified=report.dropped_unverified,
                )
            await self._sleep(self._refresh_interval)
