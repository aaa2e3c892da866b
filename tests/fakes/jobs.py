"""JobLeases fake: leases in a dict, with the same take-if-free-expired-or-own rule."""

from datetime import datetime


class InMemoryJobLeases:
    """Records every attempt in `attempts` (name, holder, granted); `fail_next` is raised by the next call."""

    def __init__(self) -> None:
        self.leases: dict[str, tuple[str, datetime]] = {}
        self.attempts: list[tuple[str, str, bool]] = []
        self.fail_next: Exception | None = None

    def _check_failure(self) -> None:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error

    async def acquire(self, name: str, holder: str, now: datetime, expires_at: datetime) -> bool:
        self._check_failure()
        current = self.leases.get(name)
        granted = current is None or current[1] <= now or current[0] == holder
        if granted:
            self.leases[name] = (holder, expires_at)
        self.attempts.append((name, holder, granted))
        return granted

    async def release(self, name: str, holder: str) -> bool:
        self._check_failure()
        current = self.leases.get(name)
        if current is None or current[0] != holder:
            return False
        del self.leases[name]
        return True
