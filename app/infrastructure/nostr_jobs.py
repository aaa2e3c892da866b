"""Nostr background jobs: publish the listing to each relay (24 h cycle, per-relay backoff) and refresh discovery.

Started from the app lifespan without awaiting any relay, so relays never delay startup or requests.
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
from app.domain.services.nostr import AnnouncementPublisher, DiscoveryService
from app.infrastructure.container import Adapters
from app.infrastructure.settings import Settings

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)

MIN_RECHECK_SECONDS: Final = 60

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
    ) -> None:
        self.relays = tuple(relays)
        self.discovery = discovery
        self.publisher = publisher
        self.publish_skipped = publish_skipped
        self._refresh_interval = refresh_interval_seconds
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
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
        return cls(
            relays=adapters.relays,
            discovery=DiscoveryService(adapters.relays, adapters.signature_verifier, enabled=enabled),
            publisher=publisher,
            publish_skipped=skipped,
            refresh_interval_seconds=settings.providers_refresh_interval_seconds,
            clock=adapters.clock,
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
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()

    async def publish_loop(self, relay: Relay) -> None:
        """Publish to one relay forever: after success wait until the copy is 24 h old, after failure back off."""
        assert self.publisher is not None  # noqa: S101 - only started with a publisher
        failures = 0
        while True:
            try:
                outcome = await self.publisher.publish_to(relay)
            except RelayError as exc:
                failures += 1
                delay = backoff_seconds(failures, self._jitter())
                log.warning("nostr_publish_failed", relay=relay.url, error=exc.message, retry_in_seconds=round(delay))
                await self._sleep(delay)
                continue
            except Exception as exc:  # a bug must not kill the job silently
                failures += 1
                delay = backoff_seconds(failures, self._jitter())
                log.exception("nostr_publish_crashed", relay=relay.url, error_type=type(exc).__name__)
                await self._sleep(delay)
                continue
            failures = 0
            log.info(
                "nostr_published" if outcome.published else "nostr_publish_unchanged",
                relay=relay.url,
                event_id=outcome.event.id,
                created_at=outcome.event.created_at,
            )
            now = int(self._clock.now().timestamp())
            await self._sleep(max(outcome.next_due - now, MIN_RECHECK_SECONDS))

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
