"""Health use case: every check the node depends on, named."""

from app.domain.node import HealthReport
from app.domain.ports import StorageHealth


class HealthService:
    def __init__(self, storage: StorageHealth) -> None:
        self._storage = storage

    async def check(self) -> HealthReport:
        problem = await self._storage.check()
        return HealthReport(checks={"database": problem or "ok"})
