"""ProxyService on fakes: reservation, failover, settlement exactly once, streaming relay and disconnects."""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import pytest

from app.domain.accounts import LimitReset, NewApiKey, ReservationStatus, hash_api_key
from app.domain.catalog import Catalog, ModelOffer
from app.domain.errors import (
    BalanceLimitExceededError,
    InsufficientBalanceError,
    InvalidJsonError,
    ModelNotFoundError,
    PriceUnavailableError,
    StorageUnavailableError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamTimeoutError,
)
from app.domain.estimate import estimated_output_tokens
from app.domain.money import Msat
from app.domain.pricing import FeeSchedule, ModelPricing, PricingPolicy, charge_for
from app.domain.services.accounts import AccountService
from app.domain.services.proxy import CompletedRequest, ProxyReply, ProxyRequest, ProxyService, ProxyTimings
from app.domain.upstream import UpstreamRequest
from app.domain.usage import Usage
from tests.fakes.clock import FixedClock
from tests.fakes.ledger import InMemoryLedger
from tests.fakes.upstream import FakeUpstream, ScriptedReply

KEY = "sk-" + "ab" * 32
KEY_ID = hash_api_key(KEY)[:8]
RATE = 100_000 * 10**6
PRICING = ModelPricing.from_usd(
    prompt="0.000001", completion="0.000002", context_length=8192, max_completion_tokens=512
)
POLICY = PricingPolicy(fees=FeeSchedule())
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


class RecordingObserver:
    def __init__(self) -> None:
        self.records: list[CompletedRequest] = []
        self.settlement_events: list[tuple[str, str, int, str]] = []
        self.retry_delays: list[float] = []
        self.failed_charges: list[int] = []

    def request_completed(self, record: CompletedRequest) -> None:
        self.records.append(record)

    def settlement_retry(self, request_id: str, attempt: int, delay_seconds: float, error_type: str) -> None:
        self.settlement_events.append(("retry", request_id, attempt, error_type))
        self.retry_delays.append(delay_seconds)

    def settlement_failed(self, request_id: str, attempts: int, charge_msat: int, error_type: str) -> None:
        self.settlement_events.append(("failed", request_id, attempts, error_type))
        self.failed_charges.append(charge_msat)


class Harness:
    def __init__(
        self,
        upstreams: dict[str, FakeUpstream],
        *,
        rate: int | None = RATE,
        balance: int = 10**7,
        timings: ProxyTimings | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        offers: list[ModelOffer] | None = None,
        messages_providers: frozenset[str] = frozenset(),
        refusal_status: Callable[[BaseException], int] | None = None,
        accounts: Callable[[InMemoryLedger, FixedClock], AccountService] = AccountService,
    ) -> None:
        self.ledger = InMemoryLedger()
        self.clock = FixedClock()
        self.observer = RecordingObserver()
        self.upstreams = upstreams
        if offers is None:
            offers = [
                ModelOffer(
                    id="vendor/model-a", provider_id=pid, upstream_id=f"{pid}-model", pricing=PRICING, priority=n
                )
                for n, pid in enumerate(upstreams)
            ]
        self.rate = rate
        self.service = ProxyService(
            ledger=self.ledger,
            clock=self.clock,
            accounts=accounts(self.ledger, self.clock),
            upstreams=upstreams,
            catalog=lambda: Catalog(offers),
            rate=lambda: self.rate,
            policy=POLICY,
            observer=self.observer,
            timings=timings or ProxyTimings(lease_seconds=60, drain_seconds=5, keepalive_seconds=5),
            settlements=self.observer,
            sleep=sleep,
            messages_providers=messages_providers,
            refusal_status=refusal_status,
        )
        self.balance = balance

    async def fund(self) -> None:
        await self.ledger.create_key(NewApiKey(hash_api_key(KEY), Msat(self.balance), self.clock.now()))

    async def post(self, body: object, path: str = "/chat/completions", request_id: str = "req-1") -> ProxyReply:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = ProxyRequest(
            path=path,
            body=raw,
            headers=[("content-type", "application/json"), ("cookie", "c=1")],
            authorization=f"Bearer {KEY}",
            request_id=request_id,
        )
        return await self.service.handle(request)

    def key(self) -> tuple[int, int]:
        key = self.ledger.keys[hash_api_key(KEY)]
        return key.balance.value, key.reserved.value


def _json_reply(payload: Mapping[str, object], status: int = 200) -> ScriptedReply:
    return ScriptedReply(status=status, chunks=[json.dumps(payload).encode()])


def _chat(**extra: object) -> dict[str, object]:
    return {"model": "vendor/model-a", "messages": [{"role": "user", "content": "hello"}], **extra}


def _expected(usage: Usage) -> int:
    return charge_for(usage, PRICING, POLICY, RATE).total.value


async def _drain(stream: AsyncIterator[bytes] | None) -> list[bytes]:
    assert stream is not None
    return [chunk async for chunk in stream]


def _data(chunks: list[bytes]) -> list[str]:
    text = b"".join(chunks).decode()
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


async def test_handle_charges_reported_usage_and_adds_cost_when_non_streamed() -> None:
    upstream = FakeUpstream("a", replies=[_json_reply({"id": "x", "choices": [], "usage": USAGE})])
    harness = Harness({"a": upstream})
    await harness.fund()

    reply = await harness.post(_chat())

    expected = _expected(Usage(input=10, output=5))
    body = json.loads(reply.body)
    assert body["usage"]["cost"]["total_msats"] == expected
    assert body["usage"]["cost_sats"] == -(-expected // 1000)
    assert reply.headers["x-routstr-cost-msats"] == str(expected)
    assert harness.key() == (10**7 - expected, 0)
    assert [s.request_id for s in harness.ledger.settlements] == ["req-1"]
    assert json.loads(upstream.requests[0].body)["model"] == "a-model"
    assert upstream.requests[0].headers == (("content-type", "application/json"),)
    assert harness.observer.records[0].charged_msat == expected


async def test_handle_raises_model_not_found_without_reserving() -> None:
    harness = Harness({"a": FakeUpstream("a")})
    await harness.fund()

    with pytest.raises(ModelNotFoundError):
        await harness.post(_chat(model="unknown"))

    assert harness.ledger.reservations == {}
    assert [(r.status, r.key_id, r.charged_msat) for r in harness.observer.records] == [(404, KEY_ID, 0)]


@pytest.mark.parametrize("model", ["VENDOR/MODEL-A", "model-a", "other/model-a-20250101", "model-a-2025-01-01"])
async def test_handle_finds_model_case_insensitively_without_vendor_or_date(model: str) -> None:
    upstream = FakeUpstream("a", replies=[_json_reply({"choices": [], "usage": USAGE})])
    harness = Harness({"a": upstream})
    await harness.fund()

    reply = await harness.post(_chat(model=model))

    assert reply.status == 200


async def test_handle_raises_invalid_json_for_non_object_body() -> None:
    harness = Harness({"a": FakeUpstream("a")})
    await harness.fund()

    with pytest.raises(InvalidJsonError):
        await harness.post(b"[1, 2]")


async def test_handle_raises_price_unavailable_when_rate_is_stale() -> None:
    harness = Harness({"a": FakeUpstream("a")}, rate=None)
    await harness.fund()

    with pytest.raises(PriceUnavailableError):
        await harness.post(_chat())

    assert harness.ledger.reservations == {}


async def test_handle_raises_insufficient_balance_with_required_available_and_model() -> None:
    harness = Harness({"a": FakeUpstream("a")}, balance=3)
    await harness.fund()

    with pytest.raises(InsufficientBalanceError) as caught:
        await harness.post(_chat())

    details = caught.value.details or {}
    assert [(r.status, r.charged_msat) for r in harness.observer.records] == [(402, 0)]
    assert details["available_msat"] == 3
    assert details["model"] == "vendor/model-a"
    assert int(str(details["required_msat"])) > 3


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (ScriptedReply(status=503), UpstreamError),
        (ScriptedReply(status=429, retry_after="9"), UpstreamRateLimitedError),
        (ScriptedReply(status=404), UpstreamError),
    ],
)
async def test_handle_releases_the_hold_when_the_only_upstream_fails(
    reply: ScriptedReply, error: type[Exception]
) -> None:
    harness = Harness({"a": FakeUpstream("a", replies=[reply])})
    await harness.fund()

    with pytest.raises(error):
        await harness.post(_chat())

    assert harness.key() == (10**7, 0)
    assert harness.ledger.reservations["req-1"].status is ReservationStatus.RELEASED
    assert harness.ledger.settlements == []


async def test_handle_raises_upstream_timeout_after_idle_timeout() -> None:
    upstream = FakeUpstream("a", fail_next=UpstreamTimeoutError("slow"))
    harness = Harness({"a": upstream})
    await harness.fund()

    with pytest.raises(UpstreamTimeoutError):
        await harness.post(_chat())

    assert harness.key() == (10**7, 0)


async def test_handle_fails_over_to_the_next_candidate_and_charges_once() -> None:
    first = FakeUpstream("a", replies=[ScriptedReply(status=500)])
    second = FakeUpstream("b", replies=[_json_reply({"choices": [], "usage": USAGE})])
    harness = Harness({"a": first, "b": second})
    await harness.fund()

    reply = await harness.post(_chat())

    assert reply.status == 200
    assert len(first.requests) == len(second.requests) == 1
    assert first.responses[0].closed
    assert harness.key() == (10**7 - _expected(Usage(input=10, output=5)), 0)
    assert harness.observer.records[0].failovers == 1
    assert harness.observer.records[0].provider == "b"


async def test_handle_returns_upstream_400_with_request_id_and_charges_nothing() -> None:
    first = FakeUpstream("a", replies=[_json_reply({"error": {"message": "bad"}}, status=400)])
    second = FakeUpstream("b")
    harness = Harness({"a": first, "b": second})
    await harness.fund()

    reply = await harness.post(_chat())

    assert reply.status == 400
    assert json.loads(reply.body)["request_id"] == "req-1"
    assert second.requests == []
    assert harness.key() == (10**7, 0)


async def test_handle_charges_an_estimate_when_usage_is_missing() -> None:
    reply_body = {"choices": [{"message": {"content": "x" * 40}}]}
    harness = Harness({"a": FakeUpstream("a", replies=[_json_reply(reply_body)])})
    await harness.fund()

    reply = await harness.post(_chat())

    cost = json.loads(reply.body)["usage"]["cost"]
    assert cost["estimated"] is True
    assert cost["total_msats"] >= 1
    assert json.loads(reply.body)["usage"]["completion_tokens"] == 10  # ceil(40 bytes / 4)


def _sse(*payloads: object) -> list[bytes]:
    return [f"data: {json.dumps(p) if not isinstance(p, str) else p}\n\n".encode() for p in payloads]


CONTENT = {"id": "chunk-1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
USAGE_CHUNK = {"id": "chunk-1", "object": "chat.completion.chunk", "choices": [], "usage": USAGE}


async def test_stream_relays_events_and_emits_cost_chunk_before_done() -> None:
    chunks = _sse(CONTENT, CONTENT, USAGE_CHUNK, "[DONE]")
    upstream = FakeUpstream("a", replies=[ScriptedReply(content_type="text/event-stream", chunks=chunks)])
    harness = Harness({"a": upstream})
    await harness.fund()

    reply = await harness.post(_chat(stream=True))
    data = _data(await _drain(reply.stream))

    assert data[-1] == "[DONE]"
    assert [json.loads(d)["choices"][0]["delta"]["content"] for d in data[:2]] == ["hi", "hi"]
    final = json.loads(data[-2])
    assert final["usage"]["cost"]["total_msats"] == _expected(Usage(input=10, output=5))
    assert len(data) == 4
    assert json.loads(upstream.requests[0].body)["stream_options"] == {"include_usage": True}
    assert harness.key()[1] == 0


async def test_stream_moves_usage_out_of_a_content_chunk_and_fills_missing_ids() -> None:
    content_with_usage = {"choices": [{"index": 0, "delta": {"content": "yo"}}], "usage": USAGE}
    chunks = _sse({"choices": [{"index": 0, "delta": {"content": "a"}}]}, content_with_usage)
    upstream = FakeUpstream("a", replies=[ScriptedReply(content_type="text/event-stream", chunks=chunks)])
    harness = Harness({"a": upstream})
    await harness.fund()

    reply = await harness.post(_chat(stream=True))
    data = [json.loads(d) for d in _data(await _drain(reply.stream))[:-1]]

    assert data[0]["id"].startswith("chatcmpl-")
    assert "usage" not in data[1]
    assert data[1]["choices"][0]["delta"]["content"] == "yo"
    assert data[2]["choices"] == []
    assert data[2]["usage"]["cost"]["estimated"] is False


async def test_stream_break_emits_error_event_and_bills_estimate() -> None:
    broken = ScriptedReply(
        content_type="text/event-stream", chunks=_sse(CONTENT, CONTENT), fail_after=1, error=UpstreamError("reset")
    )
    harness = Harness({"a": FakeUpstream("a", replies=[broken])})
    await harness.fund()

    reply = await harness.post(_chat(stream=True))
    data = _data(await _drain(reply.stream))

    assert json.loads(data[1])["error"]["code"] == "upstream_error"
    assert json.loads(data[2])["usage"]["cost"]["estimated"] is True
    assert len(harness.ledger.settlements) == 1


async def test_stream_keeps_reading_upstream_after_client_disconnect_and_bills_its_usage() -> None:
    chunks = _sse(*([CONTENT] * 5), USAGE_CHUNK, "[DONE]")
    reply_script = ScriptedReply(content_type="text/event-stream", chunks=chunks, delay=0.01)
    upstream = FakeUpstream("a", replies=[reply_script])
    harness = Harness({"a": upstream})
    await harness.fund()

    reply = await harness.post(_chat(stream=True))
    assert reply.stream is not None
    first = await anext(aiter(reply.stream))
    await reply.stream.aclose()  # type: ignore[attr-defined]  # an async generator
    await harness.service.wait_idle(5)

    assert first.startswith(b"data: ")
    assert upstream.responses[0].chunks_read == len(chunks)
    assert [s.requested.value for s in harness.ledger.settlements] == [_expected(Usage(input=10, output=5))]


async def test_responses_stream_holds_completed_event_and_adds_cost() -> None:
    completed = {
        "type": "response.completed",
        "response": {"id": "r", "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}},
    }
    chunks = [
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"hi"}\n\n',
        b"event: response.completed\ndata: " + json.dumps(completed).encode() + b"\n\n",
    ]
    harness = Harness(
        {"a": FakeUpstream("a", replies=[ScriptedReply(content_type="text/event-stream", chunks=chunks)])}
    )
    await harness.fund()

    reply = await harness.post({"model": "vendor/model-a", "input": "hi", "stream": True}, path="/responses")
    raw = b"".join(await _drain(reply.stream)).decode()

    assert raw.endswith("\n\n")
    assert "[DONE]" not in raw
    last = json.loads(raw.strip().split("\n")[-1][6:])
    assert last["response"]["usage"]["cost"]["total_msats"] == _expected(Usage(input=10, output=5))
    assert "event: response.completed" in raw


async def test_renew_leases_extends_only_live_reservations() -> None:
    gate = asyncio.Event()

    class SlowUpstream(FakeUpstream):
        async def send(self, request: UpstreamRequest) -> object:  # type: ignore[override]
            await gate.wait()
            return await super().send(request)

    upstream = SlowUpstream("a", replies=[_json_reply({"choices": [], "usage": USAGE})])
    harness = Harness({"a": upstream})
    await harness.fund()

    task = asyncio.create_task(harness.post(_chat()))
    await asyncio.sleep(0)
    harness.clock.advance(30)
    renewed = await harness.service.renew_leases()
    gate.set()
    await task

    assert renewed == 1
    assert harness.ledger.reservations["req-1"].status is ReservationStatus.CHARGED
    assert await harness.service.renew_leases() == 0


async def test_stream_sends_keepalive_comment_after_silence() -> None:
    script = ScriptedReply(content_type="text/event-stream", chunks=_sse(CONTENT, USAGE_CHUNK), delay=0.3)
    timings = ProxyTimings(keepalive_seconds=0.05)
    harness = Harness({"a": FakeUpstream("a", replies=[script])}, timings=timings)
    await harness.fund()

    reply = await harness.post(_chat(stream=True))
    chunks = await _drain(reply.stream)

    assert chunks[0] == b": keepalive\n\n"
    assert _data(chunks)[-1] == "[DONE]"


async def test_shutdown_cuts_open_streams_and_bills_them_by_estimate() -> None:
    script = ScriptedReply(content_type="text/event-stream", chunks=_sse(*([CONTENT] * 50), USAGE_CHUNK), delay=0.2)
    harness = Harness({"a": FakeUpstream("a", replies=[script])})
    await harness.fund()

    reply = await harness.post(_chat(stream=True))
    assert reply.stream is not None
    first = await anext(aiter(reply.stream))
    reader = asyncio.create_task(_drain(reply.stream))
    await harness.service.shutdown(grace_seconds=0.1, settle_seconds=5)
    rest = await reader

    data = _data([first, *rest])
    assert data[-1] == "[DONE]"
    assert json.loads(data[-2])["usage"]["cost"]["estimated"] is True
    assert len(harness.ledger.settlements) == 1
    assert harness.key()[1] == 0


class RecordingSleep:
    """The retry backoff's sleep: records each wait and what was live meanwhile; `during` runs in the wait."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.live: list[frozenset[str]] = []
        self.harness: Harness | None = None
        self.during: Callable[[], Awaitable[None]] | None = None

    async def __call__(self, seconds: float) -> None:
        assert self.harness is not None
        self.delays.append(seconds)
        self.live.append(self.harness.service.live_request_ids)
        if self.during is not None:
            await self.during()


def _storage_down(times: int) -> list[Exception]:
    return [StorageUnavailableError("database down") for _ in range(times)]


async def test_settlement_is_retried_with_backoff_and_charges_while_the_lease_is_renewed() -> None:
    sleep = RecordingSleep()
    harness = Harness({"a": FakeUpstream("a", replies=[_json_reply({"choices": [], "usage": USAGE})])}, sleep=sleep)
    sleep.harness = harness
    renewed: list[int] = []

    async def heartbeat() -> None:
        renewed.append(await harness.service.renew_leases())

    sleep.during = heartbeat
    await harness.fund()
    harness.ledger.failures["settle"] = _storage_down(3)

    reply = await harness.post(_chat())

    charge = _expected(Usage(input=10, output=5))
    assert reply.status == 200
    assert sleep.delays == [0.1, 0.2, 0.4]
    assert sleep.live == [frozenset({"req-1"})] * 3
    assert renewed == [1, 1, 1]
    assert harness.ledger.reservations["req-1"].status is ReservationStatus.CHARGED
    assert harness.key() == (10**7 - charge, 0)
    assert harness.service.live_request_ids == frozenset()
    assert [e[0] for e in harness.observer.settlement_events] == ["retry", "retry", "retry"]
    assert harness.observer.retry_delays == [0.1, 0.2, 0.4]
    assert harness.observer.records[-1].charged_msat == charge


async def test_settlement_charges_the_hold_the_sweeper_expired_while_the_ledger_was_failing() -> None:
    sleep = RecordingSleep()
    harness = Harness({"a": FakeUpstream("a", replies=[_json_reply({"choices": [], "usage": USAGE})])}, sleep=sleep)
    sleep.harness = harness

    async def lease_lapses() -> None:
        harness.clock.advance(61)
        await harness.service.sweep()

    sleep.during = lease_lapses
    await harness.fund()
    harness.ledger.failures["settle"] = _storage_down(1)

    reply = await harness.post(_chat())

    charge = _expected(Usage(input=10, output=5))
    assert reply.status == 200
    assert harness.ledger.reservations["req-1"].status is ReservationStatus.CHARGED
    assert harness.key() == (10**7 - charge, 0)


async def test_settlement_gives_up_after_the_retry_budget_and_leaves_the_hold_to_the_sweeper() -> None:
    sleep = RecordingSleep()
    timings = ProxyTimings(lease_seconds=60, settle_retry_budget_seconds=1.0)
    harness = Harness(
        {"a": FakeUpstream("a", replies=[_json_reply({"choices": [], "usage": USAGE})])}, sleep=sleep, timings=timings
    )
    sleep.harness = harness
    await harness.fund()
    harness.ledger.failures["settle"] = _storage_down(100)

    with pytest.raises(StorageUnavailableError):
        await harness.post(_chat())

    assert sleep.delays == [0.1, 0.2, 0.4]
    assert harness.observer.settlement_events[-1] == ("failed", "req-1", 4, "StorageUnavailableError")
    assert harness.observer.failed_charges == [_expected(Usage(input=10, output=5))]
    assert harness.ledger.reservations["req-1"].status is ReservationStatus.ACTIVE
    assert harness.service.live_request_ids == frozenset()


async def test_shutdown_gives_up_a_settlement_that_keeps_failing_instead_of_hanging() -> None:
    timings = ProxyTimings(lease_seconds=60, settle_retry_first_seconds=0.05, settle_retry_max_seconds=0.05)
    harness = Harness({"a": FakeUpstream("a", replies=[_json_reply({"choices": [], "usage": USAGE})])}, timings=timings)
    await harness.fund()
    harness.ledger.failures["settle"] = _storage_down(10**6)
    request = asyncio.ensure_future(harness.post(_chat()))
    await asyncio.sleep(0.1)

    started = time.perf_counter()
    await harness.service.shutdown(grace_seconds=0.1, settle_seconds=0.1)

    assert time.perf_counter() - started < 2
    assert harness.observer.settlement_events[-1] == (
        "failed",
        "req-1",
        harness.observer.settlement_events[-1][2],
        "CancelledError",
    )
    with pytest.raises(asyncio.CancelledError):
        await request


DEAR = ModelPricing.from_usd(prompt="0.0001", completion="0.0002", context_length=8192, max_completion_tokens=512)


def _offer(provider: str, pricing: ModelPricing, model: str = "vendor/model-a") -> ModelOffer:
    return ModelOffer(id=model, provider_id=provider, upstream_id=f"{provider}-model", pricing=pricing)


async def _quote(harness: Harness) -> int:
    request = ProxyRequest("/chat/completions", json.dumps(_chat()).encode(), [], f"Bearer {KEY}", "quote")
    return (await harness.service.quote(request))[1].value


async def test_failover_to_a_dearer_candidate_grows_the_hold_in_place_under_the_request_id() -> None:
    cheap = FakeUpstream("cheap", replies=[ScriptedReply(status=503)])
    dear = FakeUpstream("dear", replies=[_json_reply({"choices": [], "usage": USAGE})])
    offers = [_offer("cheap", PRICING), _offer("dear", DEAR)]
    harness = Harness({"cheap": cheap, "dear": dear}, offers=offers)
    dear_only = Harness({"dear": dear}, offers=[_offer("dear", DEAR)])
    await harness.fund()

    reply = await harness.post(_chat())

    assert reply.status == 200
    assert [c for c in harness.ledger.calls if c[0] in {"reserve", "resize", "release"}] == [
        ("reserve", "req-1"),
        ("resize", "req-1"),
    ]
    assert list(harness.ledger.reservations) == ["req-1"]
    held = harness.ledger.reservations["req-1"]
    assert (held.status, held.amount.value) == (ReservationStatus.CHARGED, await _quote(dear_only))
    charges = [e for e in harness.ledger.entries if e.kind == "charge"]
    assert [e.request_id for e in charges] == ["req-1"]
    assert harness.observer.records[-1].reserved_msat == held.amount.value


async def test_failover_skips_a_dearer_candidate_beyond_the_key_limit_and_serves_the_next() -> None:
    cheap = FakeUpstream("cheap", replies=[ScriptedReply(status=503)])
    dear = FakeUpstream("dear", replies=[_json_reply({"choices": [], "usage": USAGE})])
    other = FakeUpstream("other", replies=[_json_reply({"choices": [], "usage": USAGE})])
    offers = [_offer("cheap", PRICING), _offer("dear", DEAR), _offer("other", PRICING, "other/model-a")]
    harness = Harness({"cheap": cheap, "dear": dear, "other": other}, offers=offers)
    limit = 3 * await _quote(harness)
    await harness.ledger.create_key(
        NewApiKey(
            hash_api_key(KEY),
            Msat(10**7),
            harness.clock.now(),
            balance_limit=Msat(limit),
            balance_limit_reset=LimitReset.DAILY,
        )
    )

    reply = await harness.post(_chat())

    assert reply.status == 200
    assert dear.requests == []
    assert len(other.requests) == 1
    assert harness.ledger.reservations["req-1"].status is ReservationStatus.CHARGED
    assert harness.key() == (10**7 - _expected(Usage(input=10, output=5)), 0)


async def test_failover_raises_balance_limit_exceeded_when_the_last_candidate_passes_the_limit() -> None:
    cheap = FakeUpstream("cheap", replies=[ScriptedReply(status=503)])
    dear = FakeUpstream("dear", replies=[_json_reply({"choices": [], "usage": USAGE})])
    harness = Harness({"cheap": cheap, "dear": dear}, offers=[_offer("cheap", PRICING), _offer("dear", DEAR)])
    limit = 3 * await _quote(harness)
    await harness.ledger.create_key(
        NewApiKey(
            hash_api_key(KEY),
            Msat(10**7),
            harness.clock.now(),
            balance_limit=Msat(limit),
            balance_limit_reset=LimitReset.DAILY,
        )
    )

    with pytest.raises(BalanceLimitExceededError):
        await harness.post(_chat())

    assert dear.requests == []
    assert harness.ledger.reservations["req-1"].status is ReservationStatus.RELEASED
    assert harness.key() == (10**7, 0)


def _anthropic_event(name: str, payload: Mapping[str, object]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


_MESSAGE_START = _anthropic_event(
    "message_start",
    {"type": "message_start", "message": {"id": "m1", "usage": {"input_tokens": 10, "output_tokens": 1}}},
)
_TEXT_DELTA = _anthropic_event(
    "content_block_delta",
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x" * 400}},
)
_MESSAGES_BODY = {
    "model": "vendor/model-a",
    "max_tokens": 10_000,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


async def test_anthropic_stream_cut_after_message_start_bills_the_delivered_text_as_estimated() -> None:
    chunks = [_MESSAGE_START, *[_TEXT_DELTA] * 50]
    broken = ScriptedReply(
        content_type="text/event-stream", chunks=chunks, fail_after=len(chunks), error=UpstreamError("reset")
    )
    harness = Harness({"a": FakeUpstream("a", replies=[broken])}, messages_providers=frozenset({"a"}))
    await harness.fund()

    reply = await harness.post(_MESSAGES_BODY, path="/messages")
    events = _data(await _drain(reply.stream))

    delivered = estimated_output_tokens(50 * 400)
    record = harness.observer.records[-1]
    assert (record.completion_tokens, record.estimated) == (delivered, True)
    assert record.charged_msat == _expected(Usage(input=10, output=delivered))
    assert json.loads(events[-1])["estimated"] is True


async def test_anthropic_stream_with_message_delta_bills_the_reported_output_exactly() -> None:
    delta = _anthropic_event(
        "message_delta",
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}},
    )
    stream = ScriptedReply(content_type="text/event-stream", chunks=[_MESSAGE_START, _TEXT_DELTA, delta])
    harness = Harness({"a": FakeUpstream("a", replies=[stream])}, messages_providers=frozenset({"a"}))
    await harness.fund()

    reply = await harness.post(_MESSAGES_BODY, path="/messages")
    await _drain(reply.stream)

    record = harness.observer.records[-1]
    assert (record.completion_tokens, record.estimated) == (7, False)
    assert record.charged_msat == _expected(Usage(input=10, output=7))


def _multipart(model: str) -> bytes:
    return (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="model"\r\n\r\n' + model.encode() + b"\r\n"
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'
        b"RIFF....\r\n--XyZ--\r\n"
    )


async def test_multipart_passthrough_uses_its_model_field_and_bills_the_per_request_price() -> None:
    upstream = FakeUpstream("a", replies=[_json_reply({"text": "transcribed"})])
    harness = Harness({"a": upstream})
    await harness.fund()
    request = ProxyRequest(
        path="/audio/transcriptions",
        body=_multipart("vendor/model-a"),
        headers=[("content-type", "multipart/form-data; boundary=XyZ")],
        authorization=f"Bearer {KEY}",
        request_id="req-1",
    )

    reply = await harness.service.handle(request)

    sent = upstream.requests[0]
    assert b'name="model"\r\n\r\na-model\r\n' in sent.body
    assert sent.body.endswith(b"RIFF....\r\n--XyZ--\r\n")
    assert sent.headers == (("content-type", "multipart/form-data; boundary=XyZ"),)
    assert reply.headers["x-routstr-cost-msats"] == "1000"
    assert json.loads(reply.body)["usage"]["cost"]["estimated"] is False
    assert harness.key() == (10**7 - 1000, 0)
