"""WebsocketRelay against a real relay on loopback, and against a loopback server that misbehaves on purpose."""

import asyncio
import datetime
import ipaddress
import json
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.server import ServerConnection, serve

from app.adapters.nostr import SecpEventSigner, SecpSignatureVerifier, WebsocketRelay
from app.domain.errors import RelayRejectedError, RelayUnavailableError
from app.domain.nostr import ANNOUNCEMENT_KIND, MAX_EVENT_BYTES, Event, EventQuery, Listing
from tests.support.backends import free_port
from tests.support.relay import running_relay

QUERY = EventQuery(kinds=(ANNOUNCEMENT_KIND,), limit=500)


@pytest.fixture(scope="module")
def relay_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_relay(tmp_path_factory.mktemp("relay")) as url:
        yield url


def _signed(signer: SecpEventSigner, name: str, created_at: int, provider_id: str = "node") -> Event:
    listing = Listing.create(
        provider_id=provider_id,
        endpoints=("https://node.example",),
        mints=("https://mint.example",),
        version="0.1.0",
        name=name,
        about="",
    )
    unsigned = listing.event(signer.public_key, created_at)
    return unsigned.signed(signer.sign(unsigned.id))


def _new_signer() -> SecpEventSigner:
    return SecpEventSigner(secrets.token_bytes(32))


async def test_publish_then_query_returns_event_with_valid_signature(relay_url: str) -> None:
    relay, signer = WebsocketRelay(relay_url), _new_signer()
    event = _signed(signer, "Node", int(time.time()))

    await relay.publish(event)
    result = await relay.query(EventQuery(kinds=(ANNOUNCEMENT_KIND,), authors=(signer.public_key,), limit=10))

    assert result.events == (event,)
    assert result.malformed == 0
    assert SecpSignatureVerifier().verify(event.pubkey, event.id, event.sig)


async def test_publish_newer_version_replaces_older_on_relay(relay_url: str) -> None:
    relay, signer = WebsocketRelay(relay_url), _new_signer()
    now = int(time.time())
    await relay.publish(_signed(signer, "Old", now - 100))
    newer = _signed(signer, "New", now)

    await relay.publish(newer)
    result = await relay.query(
        EventQuery(kinds=(ANNOUNCEMENT_KIND,), authors=(signer.public_key,), d_tags=("node",), limit=10)
    )

    assert result.events == (newer,)


async def test_query_filters_by_d_tag(relay_url: str) -> None:
    relay, signer = WebsocketRelay(relay_url), _new_signer()
    now = int(time.time())
    first, second = _signed(signer, "A", now, "a"), _signed(signer, "B", now, "b")
    await relay.publish(first)
    await relay.publish(second)

    result = await relay.query(
        EventQuery(kinds=(ANNOUNCEMENT_KIND,), authors=(signer.public_key,), d_tags=("b",), limit=10)
    )

    assert result.events == (second,)


async def test_publish_raises_unavailable_when_nothing_listens() -> None:
    relay = WebsocketRelay(f"ws://127.0.0.1:{free_port()}")

    with pytest.raises(RelayUnavailableError):
        await relay.publish(_signed(_new_signer(), "Node", 1))


async def test_query_raises_unavailable_when_nothing_listens() -> None:
    with pytest.raises(RelayUnavailableError):
        await WebsocketRelay(f"ws://127.0.0.1:{free_port()}").query(QUERY)


# -- a scripted server for what a real relay will not do on request -------------------------------------------------
Handler = Callable[[ServerConnection], Awaitable[None]]


@asynccontextmanager
async def _scripted(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, max_size=None, ssl=tls) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"{'wss' if tls else 'ws'}://127.0.0.1:{port}"


def _self_signed_context(directory: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context


async def test_query_refuses_wss_relay_when_certificate_is_not_trusted(tmp_path: Path) -> None:
    served: list[int] = []

    async def handler(connection: ServerConnection) -> None:
        served.append(1)
        await connection.wait_closed()

    async with _scripted(handler, _self_signed_context(tmp_path)) as url:
        with pytest.raises(RelayUnavailableError):
            await WebsocketRelay(url).query(QUERY)

    assert served == []


async def _subscription(connection: ServerConnection) -> str:
    frame = json.loads(await connection.recv())
    assert frame[0] == "REQ"
    return str(frame[1])


async def test_query_counts_malformed_and_oversized_events_and_keeps_valid_ones() -> None:
    valid = _signed(_new_signer(), "Valid", 1)

    async def handler(connection: ServerConnection) -> None:
        sub = await _subscription(connection)
        await connection.send("not json")
        await connection.send(json.dumps(["EVENT", sub, {"id": "zz"}]))
        await connection.send(json.dumps(["EVENT", sub, {**valid.to_json(), "content": "x" * MAX_EVENT_BYTES}]))
        await connection.send(json.dumps(["NOTICE", "hello"]))
        await connection.send(json.dumps(["EVENT", "other-sub", valid.to_json()]))
        await connection.send(json.dumps(["EVENT", sub, valid.to_json()]))
        await connection.send(json.dumps(["EOSE", sub]))
        await connection.wait_closed()

    async with _scripted(handler) as url:
        result = await WebsocketRelay(url).query(QUERY)

    assert result.events == (valid,)
    assert result.malformed == 3


async def test_query_returns_what_arrived_when_relay_never_sends_eose() -> None:
    valid = _signed(_new_signer(), "Valid", 1)

    async def handler(connection: ServerConnection) -> None:
        sub = await _subscription(connection)
        await connection.send(json.dumps(["EVENT", sub, valid.to_json()]))
        await connection.wait_closed()

    async with _scripted(handler) as url:
        result = await WebsocketRelay(url, query_timeout=0.5).query(QUERY)

    assert result.events == (valid,)


async def test_publish_raises_rejected_when_relay_answers_ok_false() -> None:
    async def handler(connection: ServerConnection) -> None:
        frame = json.loads(await connection.recv())
        await connection.send(json.dumps(["OK", frame[1]["id"], False, "blocked: no thanks"]))
        await connection.wait_closed()

    async with _scripted(handler) as url:
        with pytest.raises(RelayRejectedError, match="blocked"):
            await WebsocketRelay(url).publish(_signed(_new_signer(), "Node", 1))


async def test_publish_raises_unavailable_when_relay_never_confirms() -> None:
    async def handler(connection: ServerConnection) -> None:
        await connection.recv()
        await connection.send(json.dumps(["OK", "ff" * 32, True, ""]))  # another event's OK
        await asyncio.sleep(5)

    async with _scripted(handler) as url:
        with pytest.raises(RelayUnavailableError, match="in time"):
            await WebsocketRelay(url, ok_timeout=0.5).publish(_signed(_new_signer(), "Node", 1))


async def test_publish_raises_unavailable_when_relay_closes_without_answer() -> None:
    async def handler(connection: ServerConnection) -> None:
        await connection.recv()
        await connection.close()

    async with _scripted(handler) as url:
        with pytest.raises(RelayUnavailableError):
            await WebsocketRelay(url).publish(_signed(_new_signer(), "Node", 1))
