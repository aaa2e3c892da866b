"""GET /v1/providers: other nodes' kind 38421 announcements, verified and cached by the discovery job."""

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromQuery

from app.api.schemas import Schema
from app.domain.nostr import ProviderAnnouncement
from app.domain.nostr_bech32 import npub_encode
from app.domain.services.nostr import DiscoveryService


class ProviderSchema(Schema, frozen=True):
    id: str
    pubkey: str
    npub: str
    created_at: int
    kind: int
    name: str
    description: str | None
    endpoint_url: str | None
    endpoint_urls: list[str]
    mint_urls: list[str]
    version: str | None
    content: str

    @classmethod
    def from_domain(cls, announcement: ProviderAnnouncement) -> "ProviderSchema":
        return cls(
            id=announcement.provider_id,
            pubkey=announcement.pubkey,
            npub=npub_encode(announcement.pubkey),
            created_at=announcement.created_at,
            kind=announcement.kind,
            name=announcement.name,
            description=announcement.about,
            endpoint_url=announcement.endpoint_url,
            endpoint_urls=list(announcement.urls),
            mint_urls=list(announcement.mints),
            version=announcement.version,
            content=announcement.content,
        )


class ProvidersResponse(Schema, frozen=True):
    providers: list[ProviderSchema]

    @classmethod
    def from_domain(cls, announcements: tuple[ProviderAnnouncement, ...]) -> "ProvidersResponse":
        return cls(providers=[ProviderSchema.from_domain(a) for a in announcements])


class ProvidersController(Controller):
    path = "/v1/providers"
    tags = ("providers",)

    @get("/")
    async def list_providers(
        self, discovery: NamedDependency[DiscoveryService], pubkey: FromQuery[str | None] = None
    ) -> ProvidersResponse:
        """Announcements newest first; `pubkey` (hex or npub) keeps one author's. 404 when discovery is disabled."""
        return ProvidersResponse.from_domain(discovery.providers(pubkey))
