"""HttpCashuMint transport behaviour against a scripted loopback server: retries, backoff, error mapping, limits."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from coincurve import PrivateKey

from app.adapters.cashu import crypto
from app.adapters.cashu.mint import HttpCashuMint
from app.domain.cashu import Proof, ProofStateKind
from app.domain.errors import (
    DomainError,
    InvalidCashuTokenError,
    MintError,
    MintOutcomeUnknownError,
    MintRateLimitedError,
    MintUnreachableError,
    TokenAlreadySpentError,
    TokenPendingError,
)
from tests.integration.cashu.scripted_server import (
    Action,
    Drop,
    Reply,
    Request,
    Script,
    Stall,
    always,
    in_turn,
    scripted_server,
)
from tests.support.backends import free_port

INFO = Reply(body={"name": "scripted", "version": "test/1", "nuts": {"7": {"supported": True}}})
KEYS = {amount: crypto.point_hex(PrivateKey((amount + 7).to_bytes(32, "big")).public_key) for amount in (1, 2, 4, 8)}
KEYSET_ID = crypto.derive_keyset_id_v2(KEYS, "sat")
KEYSETS = Reply(body={"keysets": [{"id": KEYSET_ID, "unit": "sat", "active": True, "input_fee_ppk": 0}]})
KEYSET_KEYS = Reply(body={"keysets": [{"id": KEYSET_ID, "unit": "sat", "active": True, "keys": KEYS}]})
INPUT = Proof(amount=4, keyset_id=KEYSET_ID[:16], secret="ab" * 32, c=crypto.point_hex(crypto.hash_to_curve(b"c")))


class Sleeps:
    """The injected sleep: records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def _mint(client: httpx.AsyncClient, sleeps: Sleeps, **options: float) -> HttpCashuMint:
    return HttpCashuMint(
        client,
        timeout_seconds=options.get("timeout", 5.0),
        max_concurrency=int(options.get("concurrency", 4)),
        retry_max_attempts=int(options.get("attempts", 3)),
        sleep=sleeps,
        jitter=lambda: 0.0,
    )


def serving_keys(other: Action) -> Script:
    """Answers the keyset endpoints with KEYS; every other path gets `other`."""

    def script(request: Request) -> Action:
        if request.path == "/v1/keysets":
            return KEYSETS
        if request.path.startswith("/v1/keys/"):
            return KEYSET_KEYS
        return other

    return script


async def test_call_retries_429_with_exponential_backoff_then_succeeds(client: httpx.AsyncClient) -> None:
    sleeps = Sleeps()
    async with scripted_server(in_turn(Reply(status=429), Reply(status=429), then=INFO)) as server:
        info = await _mint(client, sleeps).info(server.url)

    assert info.name == "scripted"
    assert server.count("/v1/info") == 3
    assert sleeps.delays == [1.0, 2.0]


async def test_call_waits_retry_after_when_the_mint_sends_one(client: httpx.AsyncClient) -> None:
    sleeps = Sleeps()
    limited = Reply(status=429, headers=(("Retry-After", "3"),))
    async with scripted_server(in_turn(limited, then=INFO)) as server:
        await _mint(client, sleeps).info(server.url)

    assert sleeps.delays == [3]


async def test_call_raises_rate_limited_after_max_attempts(client: httpx.AsyncClient) -> None:
    sleeps = Sleeps()
    async with scripted_server(always(Reply(status=429))) as server:
        with pytest.raises(MintRateLimitedError):
            await _mint(client, sleeps, attempts=4).info(server.url)

    assert server.count("/v1/info") == 4
    assert sleeps.delays == [1.0, 2.0, 4.0]


async def test_call_gives_up_at_once_when_retry_after_exceeds_the_timeout(client: httpx.AsyncClient) -> None:
    sleeps = Sleeps()
    async with scripted_server(always(Reply(status=429, headers=(("Retry-After", "120"),)))) as server:
        with pytest.raises(MintRateLimitedError) as info:
            await _mint(client, sleeps, timeout=5.0).info(server.url)

    assert info.value.retry_after_seconds == 120
    assert server.count("/v1/info") == 1
    assert sleeps.delays == []


async def test_connection_refused_is_retried_then_reported_unreachable(client: httpx.AsyncClient) -> None:
    sleeps = Sleeps()

    with pytest.raises(MintUnreachableError) as info:
        await _mint(client, sleeps, attempts=3).info(f"http://127.0.0.1:{free_port()}")

    assert not isinstance(info.value, MintOutcomeUnknownError)
    assert sleeps.delays == [1.0, 2.0]


async def test_connection_refused_on_swap_is_retried_because_nothing_was_sent(client: httpx.AsyncClient) -> None:
    sleeps = Sleeps()
    mint = _mint(client, sleeps, attempts=2)
    async with scripted_server(serving_keys(INFO)) as server:
        await mint.keysets(server.url)  # keys cached; the swap itself then meets a closed port
    outputs = await mint.prepare_outputs(server.url, "sat", 4)

    with pytest.raises(MintUnreachableError) as info:
        await mint.swap(server.url, [INPUT], outputs)

    assert not isinstance(info.value, MintOutcomeUnknownError)
    assert sleeps.delays == [1.0]


async def test_dropped_reply_on_a_read_is_retried(client: httpx.AsyncClient) -> None:
    sleeps = Sleeps()
    async with scripted_server(in_turn(Drop(), then=INFO)) as server:
        info = await _mint(client, sleeps).info(server.url)

    assert info.version == "test/1"
    assert server.count("/v1/info") == 2


async def test_dropped_reply_on_swap_is_outcome_unknown_and_not_retried(client: httpx.AsyncClient) -> None:
    sleeps = Sleeps()
    async with scripted_server(serving_keys(Drop())) as server:
        mint = _mint(client, sleeps)
        outputs = await mint.prepare_outputs(server.url, "sat", 4)
        with pytest.raises(MintOutcomeUnknownError):
            await mint.swap(server.url, [INPUT], outputs)

    assert server.count("/v1/swap") == 1
    assert sleeps.delays == []


async def test_read_timeout_on_checkstate_is_retried(client: httpx.AsyncClient) -> None:
    sleeps = Sleeps()
    y = crypto.point_hex(crypto.hash_to_curve(b"y"))
    states = Reply(body={"states": [{"Y": y, "state": "SPENT", "witness": None}]})
    async with scripted_server(in_turn(Stall(), then=states)) as server:
        result = await _mint(client, sleeps, timeout=0.3).check_state(server.url, [y])

    assert [s.state for s in result] == [ProofStateKind.SPENT]
    assert server.count("/v1/checkstate") == 2


async def test_read_timeout_on_swap_is_outcome_unknown(client: httpx.AsyncClient) -> None:
    sleeps = Sleeps()
    async with scripted_server(serving_keys(Stall())) as server:
        mint = _mint(client, sleeps, timeout=0.3)
        outputs = await mint.prepare_outputs(server.url, "sat", 4)
        with pytest.raises(MintOutcomeUnknownError):
            await mint.swap(server.url, [INPUT], outputs)

    assert server.count("/v1/swap") == 1


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (400, 11001, TokenAlreadySpentError),
        (400, 11002, TokenPendingError),
        (400, 12001, InvalidCashuTokenError),
        (400, 10001, InvalidCashuTokenError),
        (400, 11005, MintError),
        (400, None, MintError),
        (500, None, MintOutcomeUnknownError),
    ],
)
async def test_swap_maps_mint_errors_to_domain_errors(
    client: httpx.AsyncClient, status: int, code: int | None, error: type[DomainError]
) -> None:
    body = {"detail": "refused", "code": code} if code is not None else {"detail": "boom"}
    async with scripted_server(serving_keys(Reply(status=status, body=body))) as server:
        mint = _mint(client, Sleeps())
        outputs = await mint.prepare_outputs(server.url, "sat", 4)
        with pytest.raises(error):
            await mint.swap(server.url, [INPUT], outputs)

    assert server.count("/v1/swap") == 1


async def test_server_error_on_a_read_is_a_mint_error_without_retry(client: httpx.AsyncClient) -> None:
    async with scripted_server(always(Reply(status=503, body={"detail": "down"}))) as server:
        with pytest.raises(MintError) as info:
            await _mint(client, Sleeps()).info(server.url)

    assert not isinstance(info.value, MintUnreachableError)
    assert server.count("/v1/info") == 1


@pytest.mark.parametrize("body", [[1, 2], "text", None])
async def test_non_object_reply_is_a_mint_error(client: httpx.AsyncClient, body: object) -> None:
    async with scripted_server(always(Reply(body=body))) as server:
        with pytest.raises(MintError):
            await _mint(client, Sleeps()).info(server.url)


async def test_keyset_whose_id_does_not_match_its_keys_is_refused(client: httpx.AsyncClient) -> None:
    forged = "01" + "ab" * 32
    keysets = Reply(body={"keysets": [{"id": forged, "unit": "sat", "active": True, "input_fee_ppk": 0}]})
    keys = Reply(body={"keysets": [{"id": forged, "unit": "sat", "active": True, "keys": KEYS}]})
    async with scripted_server(lambda request: keysets if request.path == "/v1/keysets" else keys) as server:
        with pytest.raises(MintError, match="does not match"):
            await _mint(client, Sleeps()).keysets(server.url)


async def test_check_state_returns_states_in_request_order(client: httpx.AsyncClient) -> None:
    ys = [crypto.point_hex(crypto.hash_to_curve(bytes([i]))) for i in range(3)]
    states = Reply(
        body={
            "states": [
                {"Y": ys[2], "state": "PENDING"},
                {"Y": ys[0], "state": "SPENT"},
                {"Y": ys[1], "state": "UNSPENT"},
            ]
        }
    )
    async with scripted_server(always(states)) as server:
        result = await _mint(client, Sleeps()).check_state(server.url, ys)

    assert [(s.y, s.state) for s in result] == [
        (ys[0], ProofStateKind.SPENT),
        (ys[1], ProofStateKind.UNSPENT),
        (ys[2], ProofStateKind.PENDING),
    ]


async def test_check_state_raises_mint_error_when_a_state_is_missing(client: httpx.AsyncClient) -> None:
    ys = [crypto.point_hex(crypto.hash_to_curve(bytes([i]))) for i in range(2)]
    async with scripted_server(always(Reply(body={"states": [{"Y": ys[0], "state": "SPENT"}]}))) as server:
        with pytest.raises(MintError):
            await _mint(client, Sleeps()).check_state(server.url, ys)


@pytest.mark.parametrize(("limit", "expected"), [(2, 2), (1, 1), (0, 6)])
async def test_concurrent_calls_are_bounded_per_mint(client: httpx.AsyncClient, limit: int, expected: int) -> None:
    slow = Reply(body=INFO.body, delay=0.2)
    async with scripted_server(always(slow)) as server:
        mint = _mint(client, Sleeps(), concurrency=limit)
        await asyncio.gather(*(mint.info(server.url) for _ in range(6)))

    assert server.max_in_flight == expected


async def test_concurrency_limit_is_separate_for_each_mint(client: httpx.AsyncClient) -> None:
    slow = Reply(body=INFO.body, delay=0.2)
    async with scripted_server(always(slow)) as first, scripted_server(always(slow)) as second:
        mint = _mint(client, Sleeps(), concurrency=1)
        started = asyncio.get_running_loop().time()
        await asyncio.gather(mint.info(first.url), mint.info(second.url))
        elapsed = asyncio.get_running_loop().time() - started

    assert (first.max_in_flight, second.max_in_flight) == (1, 1)
    assert elapsed < 0.38  # both ran at once: one semaphore per mint, not one for all


async def test_prepare_outputs_uses_the_active_keyset_and_splits_the_amount(client: httpx.AsyncClient) -> None:
    async with scripted_server(serving_keys(INFO)) as server:
        outputs = await _mint(client, Sleeps()).prepare_outputs(server.url, "sat", 13)

    assert [o.amount for o in outputs] == [1, 4, 8]
    assert {o.keyset_id for o in outputs} == {KEYSET_ID}
    assert all(crypto.point_hex(crypto.blind_message(o.secret, int(o.blinding_factor, 16))) == o.b_ for o in outputs)
    assert len({o.secret for o in outputs}) == 3


async def test_keysets_are_cached_and_refetched_after_the_ttl(client: httpx.AsyncClient) -> None:
    now = [0.0]
    async with scripted_server(serving_keys(INFO)) as server:
        mint = HttpCashuMint(client, sleep=Sleeps(), keyset_ttl_seconds=10.0, clock=lambda: now[0])
        await mint.keysets(server.url)
        now[0] = 9.0
        await mint.keysets(server.url)
        cached_fetches = server.count("/v1/keysets")
        now[0] = 10.5
        await mint.keysets(server.url)

    assert cached_fetches == 1
    assert server.count("/v1/keysets") == 2
    assert server.count(f"/v1/keys/{KEYSET_ID}") == 1  # keys of a known id are kept


async def test_inactive_keyset_error_makes_the_next_call_reload_keysets(client: httpx.AsyncClient) -> None:
    inactive = Reply(status=400, body={"detail": "keyset inactive", "code": 12002})
    async with scripted_server(serving_keys(inactive)) as server:
        mint = _mint(client, Sleeps())
        outputs = await mint.prepare_outputs(server.url, "sat", 4)
        with pytest.raises(MintError):
            await mint.swap(server.url, [INPUT], outputs)
        await mint.prepare_outputs(server.url, "sat", 4)

    assert server.count("/v1/keysets") == 2
