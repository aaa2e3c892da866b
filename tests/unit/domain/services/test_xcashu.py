"""XCashuService on fakes: X-Cashu pay-per-request with change, NUT-24 402s and the X-Cashu refund (SPEC §6, §9.1)."""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from app.adapters.cashu.codec import CashuTokenCodec
from app.domain.accounts import NewApiKey, ReservationRequest, hash_api_key
from app.domain.catalog import Catalog, ModelOffer
from app.domain.errors import (
    BalanceLimitExceededError,
    ChangeUnavailableError,
    InsufficientBalanceError,
    MintUnreachableError,
    ModelNotFoundError,
    PaymentRequiredError,
    RefundConflictError,
    RequestInProgressError,
    TokenAlreadySpentError,
    TokenNotFoundError,
    UnsupportedUnitError,
    UntrustedMintError,
    UpstreamError,
)
from app.domain.money import Msat
from app.domain.pricing import FeeSchedule, ModelPricing, PricingPolicy
from app.domain.services.accounts import AccountService
from app.domain.services.payments import MintPolicy, RedemptionService
from app.domain.services.proxy import CompletedRequest, ProxyReply, ProxyRequest, ProxyService, ProxyTimings
from app.domain.services.refunds import RefundService
from app.domain.services.xcashu import PaymentModeObserver, XCashuPayments, XCashuService, x_cashu_token
from app.domain.wallet import NewRedemption, RefundKind, RefundState, token_api_key, token_key_hash
from tests.fakes.clock import FixedClock
from tests.fakes.ledger import InMemoryLedger, InMemoryLedgerAudit
from tests.fakes.mint import FakeMint
from tests.fakes.upstream import FakeUpstream, ScriptedReply
from tests.fakes.wallet import InMemoryRedemptions, InMemoryWallet, ProofStore

MINT = "http://mint.test"
SECOND = "http://second.test"
UNTRUSTED = "http://untrusted.test"
RATE = 100_000 * 10**6
PRICING = ModelPricing.from_usd(
    prompt="0.000001", completion="0.000002", context_length=8192, max_completion_tokens=512
)
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
KEY = "sk-" + "cd" * 32


class RecordingObserver:
    def __init__(self) -> None:
        self.records: list[CompletedRequest] = []

    def request_completed(self, record: CompletedRequest) -> None:
        self.records.append(record)


@dataclass
class Env:
    service: XCashuService
    proxy: ProxyService
    upstream: FakeUpstream
    mint: FakeMint
    ledger: InMemoryLedger
    wallet: InMemoryWallet
    redemptions: InMemoryRedemptions
    proofs: ProofStore
    clock: FixedClock
    observer: RecordingObserver
    redemption: RedemptionService
    codec: CashuTokenCodec = field(default_factory=CashuTokenCodec)

    def token(self, amount: int, mint: str = MINT, unit: str | None = None) -> str:
        return self.codec.encode_token(self.mint.issue(mint, amount, unit=unit))

    def request(
        self,
        body: object,
        *,
        x_cashu: str | None = None,
        authorization: str | None = None,
        path: str = "/chat/completions",
    ) -> ProxyRequest:
        headers = [("content-type", "application/json")]
        if x_cashu is not None:
            headers.append(("X-Cashu", x_cashu))
        return ProxyRequest(
            path=path,
            body=json.dumps(body).encode(),
            headers=headers,
            authorization=authorization,
            request_id="req-1",
        )

    def change_records(self) -> list[tuple[RefundKind, str | None, int, RefundState]]:
        return [(r.kind, r.request_id, r.amount, r.state) for r in self.wallet.refunds.values()]

    async def audit(self) -> None:
        assert await InMemoryLedgerAudit(self.ledger).violations() == []
        owed = sum(k.balance.value for k in self.ledger.keys.values() if k.refund_mint_url == MINT)
        assert owed <= self.proofs.value(MINT, "sat") * 1000


def _env(replies: list[ScriptedReply], policy: PricingPolicy | None = None) -> Env:
    ledger = InMemoryLedger()
    proofs = ProofStore()
    redemptions = InMemoryRedemptions(ledger, proofs)
    wallet = InMemoryWallet(ledger, proofs)
    mint = FakeMint({MINT: 0, SECOND: 0, UNTRUSTED: 0})
    clock = FixedClock()
    codec = CashuTokenCodec()
    observer = RecordingObserver()
    modes = PaymentModeObserver(observer)
    upstream = FakeUpstream("a", replies=replies)
    offers = [ModelOffer(id="vendor/model-a", provider_id="a", upstream_id="a-model", pricing=PRICING)]
    proxy = ProxyService(
        ledger=ledger,
        clock=clock,
        accounts=AccountService(ledger, clock),
        upstreams={"a": upstream},
        catalog=lambda: Catalog(offers),
        rate=lambda: RATE,
        policy=policy or PricingPolicy(fees=FeeSchedule()),
        observer=modes,
        timings=ProxyTimings(lease_seconds=60, drain_seconds=5, keepalive_seconds=5),
    )
    redemption = RedemptionService(
        codec=codec,
        mint=mint,
        redemptions=redemptions,
        ledger=ledger,
        clock=clock,
        policy=MintPolicy(trusted_mints=(MINT, SECOND), unit="sat"),
    )
    refunds = RefundService(wallet=wallet, mint=mint, codec=codec, clock=clock)
    service = XCashuService(
        proxy=proxy,
        codec=codec,
        clock=clock,
        mints=(MINT, SECOND),
        unit="sat",
        payments=XCashuPayments(redemption, refunds, mint, ledger, wallet, redemptions),
        modes=modes,
    )
    return Env(service, proxy, upstream, mint, ledger, wallet, redemptions, proofs, clock, observer, redemption)


def _json(payload: object, status: int = 200) -> ScriptedReply:
    return ScriptedReply(status=status, chunks=[json.dumps(payload).encode()])


def _sse(*events: object) -> ScriptedReply:
    chunks = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]
    return ScriptedReply(content_type="text/event-stream", chunks=chunks)


def _chat(**extra: object) -> dict[str, object]:
    return {"model": "vendor/model-a", "messages": [{"role": "user", "content": "hello"}], **extra}


async def _drain(reply: ProxyReply) -> list[bytes]:
    stream: AsyncIterator[bytes] | None = reply.stream
    assert stream is not None
    return [chunk async for chunk in stream]


def _data(chunks: list[bytes]) -> list[str]:
    return [line[6:] for line in b"".join(chunks).decode().split("\n") if line.startswith("data: ")]


# -- X-Cashu pay-per-request -------------------------------------------------------------------------------------------
async def test_handle_returns_change_in_header_when_non_streamed() -> None:
    env = _env([_json({"id": "x", "choices": [], "usage": USAGE})])
    token = env.token(64)

    reply = await env.service.handle(env.request(_chat(), x_cashu=token))

    cost_sats = json.loads(reply.body)["usage"]["cost_sats"]
    change = env.codec.decode_token(reply.headers["x-cashu"])
    assert (change.mint, change.unit) == (MINT, "sat")
    assert change.amount == 64 - cost_sats
    assert env.change_records() == [(RefundKind.CHANGE, "req-1", 64 - cost_sats, RefundState.ISSUED)]
    assert env.ledger.keys[token_key_hash(token)].balance == Msat(0)
    assert env.observer.records[-1].payment_mode == "x_cashu"
    await env.audit()


async def test_handle_refuses_402_with_creq_and_leaves_token_untouched_when_token_is_worth_less_than_r() -> None:
    env = _env([_json({"id": "x", "choices": [], "usage": USAGE})])
    token = env.token(1)

    with pytest.raises(InsufficientBalanceError) as caught:
        await env.service.handle(env.request(_chat(), x_cashu=token))

    details: dict[str, Any] = dict(caught.value.details or {})
    assert details["available_msat"] == 1000
    assert details["required_msat"] > 1000
    assert details["model"] == "vendor/model-a"
    assert caught.value.payment_request is not None
    creq = env.codec.decode_payment_request(caught.value.payment_request)
    assert creq.amount == -(-details["required_msat"] // 1000)
    assert (creq.unit, creq.mints, creq.single_use) == ("sat", (MINT, SECOND), True)
    assert env.mint.count("swap") == 0
    assert env.redemptions.rows == {}
    assert env.upstream.requests == []
    assert env.observer.records[-1].status == 402
    assert env.observer.records[-1].payment_mode == "x_cashu"


@pytest.mark.parametrize(
    ("mint", "unit", "error"), [(UNTRUSTED, None, UntrustedMintError), (MINT, "usd", UnsupportedUnitError)]
)
async def test_handle_refuses_token_without_contacting_its_mint_when_mint_or_unit_is_wrong(
    mint: str, unit: str | None, error: type[Exception]
) -> None:
    env = _env([_json({"id": "x", "choices": [], "usage": USAGE})])
    token = env.token(64, mint=mint, unit=unit)

    with pytest.raises(error):
        await env.service.handle(env.request(_chat(), x_cashu=token))

    assert env.mint.calls == []
    assert env.upstream.requests == []


async def test_handle_returns_whole_amount_as_refund_token_when_upstream_fails() -> None:
    env = _env([_json({"error": "boom"}, status=500)])
    token = env.token(64)

    with pytest.raises(UpstreamError) as caught:
        await env.service.handle(env.request(_chat(), x_cashu=token))

    assert caught.value.refund_token is not None
    assert env.codec.decode_token(caught.value.refund_token).amount == 64
    assert caught.value.change_pending is None
    assert env.ledger.settlements == []
    assert env.change_records() == [(RefundKind.CHANGE, "req-1", 64, RefundState.ISSUED)]
    await env.audit()


async def test_handle_marks_change_pending_and_keeps_funds_when_issuing_change_fails() -> None:
    env = _env([_json({"id": "x", "choices": [], "usage": USAGE})])
    token = env.token(64)
    env.wallet.fail_next = MintUnreachableError("mint down")

    reply = await env.service.handle(env.request(_chat(), x_cashu=token))

    cost_sats = json.loads(reply.body)["usage"]["cost_sats"]
    assert "x-cashu" not in reply.headers
    assert reply.headers["x-routstr-change-pending"] == str(64 - cost_sats)
    refund = await env.service.refund(token)
    assert env.codec.decode_token(refund.token).amount == 64 - cost_sats
    await env.audit()


async def test_handle_emits_change_event_before_done_when_streamed() -> None:
    env = _env(
        [
            _sse(
                {"id": "chatcmpl-1", "choices": [{"delta": {"content": "hi"}}]},
                {"id": "chatcmpl-1", "choices": [], "usage": USAGE},
            )
        ]
    )
    token = env.token(64)

    reply = await env.service.handle(env.request(_chat(stream=True), x_cashu=token))
    events = _data(await _drain(reply))

    assert events[-1] == "[DONE]"
    cost = json.loads(events[-3])["usage"]["cost_sats"]
    change = json.loads(events[-2])
    assert list(change) == [
        "id", "object", "created", "model", "choices", "x_cashu", "amount", "unit", "request_id"
    ]  # fmt: skip
    assert change["id"] == "chatcmpl-1"
    assert change["object"] == "routstr.change"
    assert change["created"] == int(env.clock.now().timestamp())
    assert (change["model"], change["choices"], change["unit"], change["request_id"]) == (
        "vendor/model-a",
        [],
        "sat",
        "req-1",
    )
    assert change["amount"] == 64 - cost
    assert env.codec.decode_token(change["x_cashu"]).amount == 64 - cost
    await env.audit()


async def test_handle_emits_null_change_when_nothing_is_left() -> None:
    policy = PricingPolicy(fees=FeeSchedule(), min_request=Msat(1000))
    env = _env([_sse({"id": "c", "choices": [], "usage": USAGE})], policy)
    token = env.token(1)

    reply = await env.service.handle(env.request(_chat(stream=True, max_tokens=1), x_cashu=token))
    change = json.loads(_data(await _drain(reply))[-2])

    assert (change["x_cashu"], change["amount"], "pending" in change) == (None, 0, False)
    assert env.wallet.refunds == {}


async def test_handle_emits_pending_change_event_when_issuing_fails() -> None:
    env = _env([_sse({"id": "c", "choices": [], "usage": USAGE})])
    token = env.token(64)

    reply = await env.service.handle(env.request(_chat(stream=True), x_cashu=token))
    env.wallet.fail_next = MintUnreachableError("mint down")
    change = json.loads(_data(await _drain(reply))[-2])

    assert change["x_cashu"] is None
    assert change["pending"] is True
    assert change["amount"] > 0


async def test_handle_names_change_event_in_typed_dialects() -> None:
    completed = {
        "type": "response.completed",
        "response": {"id": "resp_1", "usage": {"input_tokens": 3, "output_tokens": 2}},
    }
    env = _env(
        [
            ScriptedReply(
                content_type="text/event-stream",
                chunks=[b"event: response.completed\ndata: " + json.dumps(completed).encode() + b"\n\n"],
            )
        ]
    )
    token = env.token(64)

    reply = await env.service.handle(env.request(_chat(stream=True), x_cashu=token, path="/responses"))
    text = b"".join(await _drain(reply)).decode()

    last = text.strip().split("\n\n")[-1]
    assert last.startswith("event: routstr.change\ndata: ")
    assert json.loads(last.split("data: ", 1)[1])["id"] == "resp_1"


async def test_handle_refuses_reused_token_as_already_spent_when_its_funds_are_gone() -> None:
    env = _env([_json({"id": "x", "choices": [], "usage": USAGE})])
    token = env.token(64)
    await env.service.handle(env.request(_chat(), x_cashu=token))

    with pytest.raises(TokenAlreadySpentError):
        await env.service.handle(env.request(_chat(), x_cashu=token))

    assert len(env.upstream.requests) == 1
    assert [e.kind for e in env.ledger.entries].count("deposit") == 1


async def test_handle_serves_retry_of_credited_token_when_funds_remain() -> None:
    env = _env([_json({"id": "x", "choices": [], "usage": USAGE})])
    token = env.token(64)
    await env.redemption.redeem(token, key_hash=token_key_hash(token))  # a first attempt whose reply was lost

    reply = await env.service.handle(env.request(_chat(), x_cashu=token))

    assert reply.status == 200
    assert [e.kind for e in env.ledger.entries].count("deposit") == 1
    await env.audit()


# -- NUT-24 on keyed requests -----------------------------------------------------------------------------------------
async def test_handle_answers_payment_required_with_creq_when_no_credential() -> None:
    env = _env([_json({"id": "x", "choices": [], "usage": USAGE})])

    with pytest.raises(PaymentRequiredError) as caught:
        await env.service.handle(env.request(_chat()))

    details: dict[str, Any] = dict(caught.value.details or {})
    assert details["available_msat"] == 0
    assert details["model"] == "vendor/model-a"
    assert caught.value.payment_request is not None
    creq = env.codec.decode_payment_request(caught.value.payment_request)
    assert creq.amount == -(-details["required_msat"] // 1000)
    assert creq.description == "routstr vendor/model-a"
    assert env.ledger.reservations == {}
    assert [(r.status, r.key_id, r.model) for r in env.observer.records] == [(402, None, "vendor/model-a")]


async def test_handle_refuses_unknown_model_before_asking_for_payment_when_no_credential() -> None:
    env = _env([_json({"id": "x", "choices": [], "usage": USAGE})])

    with pytest.raises(ModelNotFoundError) as caught:
        await env.service.handle(env.request(_chat(model="nope")))

    assert caught.value.payment_request is None
    assert [r.status for r in env.observer.records] == [404]


async def test_handle_attaches_creq_to_insufficient_balance_of_a_key() -> None:
    env = _env([_json({"id": "x", "choices": [], "usage": USAGE})])
    await env.ledger.create_key(NewApiKey(hash_api_key(KEY), Msat(10), env.clock.now()))

    with pytest.raises(InsufficientBalanceError) as caught:
        await env.service.handle(env.request(_chat(), authorization=f"Bearer {KEY}"))

    details: dict[str, Any] = dict(caught.value.details or {})
    assert details["available_msat"] == 10
    assert caught.value.payment_request is not None
    assert env.codec.decode_payment_request(caught.value.payment_request).amount == -(-details["required_msat"] // 1000)


async def test_handle_passes_keyed_requests_straight_to_the_proxy() -> None:
    env = _env([_json({"id": "x", "choices": [], "usage": USAGE})])
    await env.ledger.create_key(NewApiKey(hash_api_key(KEY), Msat(10**7), env.clock.now()))

    reply = await env.service.handle(env.request(_chat(), authorization=f"Bearer {KEY}"))

    assert reply.status == 200
    assert "x-cashu" not in reply.headers
    assert env.observer.records[-1].payment_mode == "key"


def test_x_cashu_token_reads_header_in_any_case_and_ignores_blank() -> None:
    assert x_cashu_token([("X-CASHU", " cashuBabc ")]) == "cashuBabc"
    assert x_cashu_token([("x-cashu", "  ")]) is None
    assert x_cashu_token([("authorization", "Bearer x")]) is None


# -- refund by token --------------------------------------------------------------------------------------------------
async def test_refund_raises_token_not_found_when_never_redeemed() -> None:
    env = _env([])

    with pytest.raises(TokenNotFoundError):
        await env.service.refund(env.token(8))


async def test_refund_raises_request_in_progress_while_a_hold_is_active() -> None:
    env = _env([])
    token = env.token(64)
    redeemed = await env.redemption.redeem(token, key_hash=token_key_hash(token))
    now = env.clock.now()
    await env.ledger.reserve(
        ReservationRequest("held", redeemed.key.key_hash, Msat(5000), now, now + timedelta(seconds=60))
    )

    with pytest.raises(RequestInProgressError) as caught:
        await env.service.refund(token)

    assert caught.value.retry_after_seconds == 2


async def test_refund_returns_the_latest_change_again_when_nothing_is_available() -> None:
    env = _env([_json({"id": "x", "choices": [], "usage": USAGE})])
    token = env.token(64)
    reply = await env.service.handle(env.request(_chat(), x_cashu=token))

    again = await env.service.refund(token)

    assert again.token == reply.headers["x-cashu"]
    assert again.repeated is True


async def test_refund_raises_change_unavailable_when_token_was_fully_spent() -> None:
    env = _env(
        [_json({"id": "x", "choices": [], "usage": USAGE})], PricingPolicy(fees=FeeSchedule(), min_request=Msat(1000))
    )
    token = env.token(1)
    await env.service.handle(env.request(_chat(max_tokens=1), x_cashu=token))

    with pytest.raises(ChangeUnavailableError):
        await env.service.refund(token)


async def test_refund_sends_available_balance_of_token_key() -> None:
    env = _env([])
    token = env.token(64)
    await env.redemption.redeem(token, key_hash=token_key_hash(token))

    refund = await env.service.refund(token)

    assert env.codec.decode_token(refund.token).amount == 64
    assert env.ledger.keys[token_key_hash(token)].balance == Msat(0)
    await env.audit()


async def test_refund_raises_request_in_progress_while_the_redemption_is_pending() -> None:
    env = _env([])
    raw = env.token(64)
    token = env.codec.decode_token(raw)
    claim = NewRedemption(
        token_hash=token.token_hash,
        key_hash=token_key_hash(raw),
        mint_url=MINT,
        unit="sat",
        amount=64,
        fee=0,
        input_ys=tuple(env.mint.proof_ys(token.proofs)),
        now=env.clock.now(),
    )
    await env.redemptions.claim(claim)

    with pytest.raises(RequestInProgressError):
        await env.service.refund(raw)


async def test_refund_raises_refund_conflict_when_the_balance_moved_meanwhile() -> None:
    env = _env([])
    token = env.token(64)
    await env.redemption.redeem(token, key_hash=token_key_hash(token))
    env.wallet.fail_next = RefundConflictError("balance moved")

    with pytest.raises(RefundConflictError):
        await env.service.refund(token)

    assert env.ledger.keys[token_key_hash(token)].balance == Msat(64_000)


async def test_handle_keeps_funds_on_the_token_key_when_streaming_client_leaves() -> None:
    chunks = [b'data: {"id":"c","choices":[{"delta":{"content":"a"}}]}\n\n'] * 3
    usage = b"data: " + json.dumps({"id": "c", "choices": [], "usage": USAGE}).encode() + b"\n\n"
    env = _env([ScriptedReply(content_type="text/event-stream", chunks=[*chunks, usage, b"data: [DONE]\n\n"])])
    token = env.token(64)
    reply = await env.service.handle(env.request(_chat(stream=True), x_cashu=token))
    stream = reply.stream
    assert stream is not None

    first = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]  # an async generator
    await env.proxy.wait_idle(5)

    assert first.startswith(b"data: ")
    assert env.wallet.refunds == {}
    key = env.ledger.keys[token_key_hash(token)]
    assert (key.reserved, len(env.ledger.settlements)) == (Msat(0), 1)
    refund = await env.service.refund(token)
    assert refund.amount == key.available.value // 1000
    await env.audit()


async def test_handle_attaches_creq_and_model_to_balance_limit_refusal_keeping_its_details() -> None:
    env = _env([_json({"id": "x", "choices": [], "usage": USAGE})])
    new = NewApiKey(hash_api_key(KEY), Msat(10**7), env.clock.now(), balance_limit=Msat(10))
    await env.ledger.create_key(new)

    with pytest.raises(BalanceLimitExceededError) as caught:
        await env.service.handle(env.request(_chat(), authorization=f"Bearer {KEY}"))

    details: dict[str, Any] = dict(caught.value.details or {})
    assert details["model"] == "vendor/model-a"
    assert details["limit_msat"] == 10
    assert caught.value.payment_request is not None
    creq = env.codec.decode_payment_request(caught.value.payment_request)
    assert creq.amount == -(-details["required_msat"] // 1000)
    assert creq.description == "routstr vendor/model-a"


def test_payment_mode_observer_marks_only_x_cashu_requests_once() -> None:
    inner = RecordingObserver()
    modes = PaymentModeObserver(inner)
    record = CompletedRequest("r1", None, None, None, 0, 0, 0, 0, 200, 1, None, False, "key", False, 0)
    modes.mark("r1")

    modes.request_completed(record)
    modes.request_completed(record)

    assert [r.payment_mode for r in inner.records] == ["x_cashu", "key"]


async def test_handle_answers_request_in_progress_when_a_retry_finds_the_funds_held() -> None:
    env = _env([_json({"id": "x", "choices": [], "usage": USAGE})])
    token = env.token(64)
    redeemed = await env.redemption.redeem(token, key_hash=token_key_hash(token))
    now = env.clock.now()
    hold = ReservationRequest("first", redeemed.key.key_hash, Msat(63_500), now, now + timedelta(seconds=60))
    await env.ledger.reserve(hold)

    with pytest.raises(RequestInProgressError):
        await env.service.handle(env.request(_chat(), x_cashu=token))

    assert env.upstream.requests == []
    assert env.wallet.refunds == {}


class JoinedTailProxy:
    """A PaidProxy whose stream writes the cost chunk and `[DONE]` as one piece (a coalescing relay)."""

    def __init__(self, required: Msat) -> None:
        self.required = required
        self.quoted: list[ProxyRequest] = []
        self.handled: list[ProxyRequest] = []

    async def quote(self, request: ProxyRequest) -> tuple[str | None, Msat]:
        self.quoted.append(request)
        return "vendor/model-a", self.required

    async def handle(self, request: ProxyRequest) -> ProxyReply:
        self.handled.append(request)

        async def stream() -> AsyncIterator[bytes]:
            yield b'data: {"id":"chatcmpl-9","choices":[{"delta":{"content":"a"}}]}\n\n'
            yield b'data: {"id":"chatcmpl-9","choices":[],"usage":{"cost_sats":1}}\n\ndata: [DONE]\n\n'

        return ProxyReply(status=200, headers={}, media_type="text/event-stream", stream=stream())


async def test_handle_puts_change_event_before_done_when_done_is_joined_to_the_cost_chunk() -> None:
    env = _env([])
    proxy = JoinedTailProxy(Msat(500))
    service = XCashuService(
        proxy=proxy,
        codec=env.codec,
        clock=env.clock,
        mints=(MINT,),
        unit="sat",
        payments=XCashuPayments(
            env.redemption,
            RefundService(wallet=env.wallet, mint=env.mint, codec=env.codec, clock=env.clock),
            env.mint,
            env.ledger,
            env.wallet,
            env.redemptions,
        ),
    )
    token = env.token(8)

    reply = await service.handle(env.request(_chat(stream=True), x_cashu=token))
    events = _data(await _drain(reply))

    assert [json.loads(e).get("object") for e in events[:-1]] == [None, None, "routstr.change"]
    assert events[-1] == "[DONE]"
    change = json.loads(events[-2])
    assert (change["id"], change["amount"]) == ("chatcmpl-9", 8)
    assert [r.authorization for r in proxy.handled] == [f"Bearer {token_api_key(token)}"]
    assert len(proxy.quoted) == 1
