"""GET / and GET /v1/info: what this node is and how it prices."""

from litestar import Controller, get
from litestar.di import NamedDependency

from app.api.schemas import InfoResponse, RootResponse
from app.domain.node import NodeInfo


class InfoController(Controller):
    path = "/"
    tags = ("info",)

    @get("/")
    async def root(self, node_info: NamedDependency[NodeInfo]) -> RootResponse:
        return RootResponse.from_domain(node_info)

    @get("/v1/info")
    async def info(self, node_info: NamedDependency[NodeInfo]) -> InfoResponse:
        return InfoResponse.from_domain(node_info)
