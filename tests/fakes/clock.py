"""Clock fake: a fixed UTC time that only moves when a test advances it."""

from datetime import UTC, datetime, timedelta


class FixedClock:
    """`now()` returns `current`; `advance(seconds)` moves it forward. Every read is counted in `reads`."""

    def __init__(self, current: datetime | None = None) -> None:
        self.current = current or datetime(2026, 1, 1, tzinfo=UTC)
        self.reads = 0

    def now(self) -> datetime:
        self.reads += 1
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)
