"""The reconciler as a leased background job (SPEC §3, §7.4): one instance settles stale Cashu operations every 60 s."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

import structlog

from app.domain.services.leases import LeasedJob
from app.domain.services.reconciler import ReconcilerService
from app.infrastructure.container import Adapters
from app.infrastructure.settings import Settings

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)

RECONCILER_LEASE_NAME: Final = "cashu_reconciler"
INTERVAL_SECONDS: Final = 60
# The holder keeps the lease until its next run plus this margin (which also covers one slow pass).
LEASE_MARGIN_SECONDS: Final = 120

Sleep = Callable[[float], Awaitable[None]]


class ReconcilerJob:
    """Runs `ReconcilerService.run_once` every INTERVAL_SECONDS on the instance holding the lease (every instance
    when there is no lease store). `sleep` is injectable so tests drive the schedule without waiting."""

    def __init__(
        self,
        reconciler: ReconcilerService,
        *,
        lease: LeasedJob | None,
        interval_seconds: float = INTERVAL_SECONDS,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.reconciler = reconciler
        self.lease = lease
        self._interval = interval_seconds
        self._sleep = sleep
        self.holding = False
        self.task: asyncio.Task[None] | None = None

    @classmethod
    def build(cls, settings: Settings, adapters: Adapters) -> "ReconcilerJob | None":
        """None when the node takes no Cashu payments (no mint, wallet or redemptions adapters)."""
        if adapters.mint is None or adapters.wallet is None or adapters.redemptions is None:
            return None
        reconciler = ReconcilerService(
            mint=adapters.mint,
            redemptions=adapters.redemptions,
            wallet=adapters.wallet,
            clock=adapters.clock,
            timeout_seconds=float(settings.mint_operation_timeout_seconds),
        )
        lease = (
            LeasedJob(
                adapters.job_leases,
                adapters.clock,
                name=RECONCILER_LEASE_NAME,
                holder=adapters.instance_id,
                margin_seconds=LEASE_MARGIN_SECONDS,
            )
            if adapters.job_leases is not None
            else None
        )
        return cls(reconciler, lease=lease)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.loop(), name="cashu-reconciler")

    async def stop(self) -> None:
        """Cancel the loop, then hand the lease back so another instance can take over at once."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        if self.lease is not None and self.holding:
            self.holding = False
            try:
                await self.lease.release()
            except Exception as exc:  # the lease then simply lapses
                log.warning("reconciler_lease_release_failed", error_type=type(exc).__name__)

    async def cycle(self) -> bool:
        """One cycle: take or renew the lease, then run one pass if held. True when a pass ran."""
        if self.lease is not None:
            try:
                self.holding = await self.lease.hold(self._interval)
            except Exception as exc:
                log.warning("reconciler_lease_failed", error_type=type(exc).__name__)
                self.holding = False
            if not self.holding:
                return False
        try:
            report = await self.reconciler.run_once()
        except Exception as exc:  # storage trouble or a bug must not kill the job
            log.exception("reconciler_pass_failed", error_type=type(exc).__name__)
            return True
        if report.total:
            log.info("reconciler_pass", **{outcome.value: n for outcome, n in report.outcomes.items()})
        return True

    async def loop(self) -> None:
        while True:
            await self.cycle()
            await self._sleep(self._interval)
