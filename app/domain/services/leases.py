"""LeasedJob: this instance's hold on one leased job (SPEC §3), renewed each cycle to cover its next sleep."""

from datetime import timedelta

from app.domain.ports import Clock, JobLeases


class LeasedJob:
    """Runs a job on one instance at a time: call `hold` before each cycle and run the cycle only when it is True.

    The lease is kept until the holder's next wake-up plus `margin_seconds`, so a live holder renews it before it
    runs out and a dead one's lease lapses about `margin_seconds` after it would have run again. `holder` must be
    unique per process (two processes with one id would both run the job). Clocks of the instances must agree to
    well within the margin: expiry is compared with the caller's `now`.
    """

    def __init__(self, leases: JobLeases, clock: Clock, *, name: str, holder: str, margin_seconds: int) -> None:
        if margin_seconds <= 0:
            msg = f"lease margin must be positive: {margin_seconds!r}"
            raise ValueError(msg)
        self._leases = leases
        self._clock = clock
        self.name = name
        self.holder = holder
        self.margin_seconds = margin_seconds

    async def hold(self, next_run_in_seconds: float = 0) -> bool:
        """Take or renew the lease until `next_run_in_seconds + margin_seconds` from now.

        True when this instance holds it (run the job); False when another instance's live lease has it (skip and
        try again later). Store errors propagate unchanged; treat them as not holding.
        """
        now = self._clock.now()
        expires_at = now + timedelta(seconds=max(next_run_in_seconds, 0) + self.margin_seconds)
        return await self._leases.acquire(self.name, self.holder, now, expires_at)

    async def release(self) -> bool:
        """Give the lease up (graceful shutdown) so another instance can take it at once; False when not held."""
        return await self._leases.release(self.name, self.holder)
