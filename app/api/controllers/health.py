"""GET /health: 200 when every dependency check passes, 503 naming the failing check otherwise."""

from litestar import Controller, Response, get
from litestar.di import NamedDependency

from app.api.schemas import HealthResponse
from app.domain.services.health import HealthService


class HealthController(Controller):
    path = "/health"
    tags = ("health",)

    @get("/")
    async def health(self, health: NamedDependency[HealthService]) -> Response[HealthResponse]:
        report = await health.check()
        return Response(HealthResponse.from_domain(report), status_code=200 if report.healthy else 503)
