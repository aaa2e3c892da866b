"""The paid proxy use case: reserve, forward with failover, relay, settle exactly once (SPEC §4.4-4.7, §8)."""

import asyncio
import contextlib
import dataclasses
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final, Protocol, TypeVar

from app.domain.accounts import (
    ReservationRequest,
    Settlement,
    hash_api_key,
    key_id,
    looks_like_api_key,
    normalize_api_key,
)
from app.domain.catalog import Catalog, Match, ModelOffer
from app.domain.errors import (
    BalanceLimitExceededError,
    DomainError,
    InsufficientBalanceError,
    InvalidApiKeyError,
    InvalidJsonError,
    InvalidRequestError,
    KeyExpiredError,
    MissingApiKeyError,
    ModelNotFoundError,
    PaymentRequiredError,
    PriceUnavailableError,
    RequestTooLargeError,
    ReservationNotFoundError,
    ReservationStateError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamTimeoutError,
)
from app.domain.estimate import (
    PromptSize,
    estimated_output_tokens,
    estimated_usage,
    measure_prompt,
    validate_max_tokens,
)
from app.domain.money import Msat
from app.domain.ports import Clock, Ledger, Upstream, UpstreamResponse
from app.domain.pricing import (
    CostBreakdown,
    ModelPricing,
    PricingPolicy,
    RequestShape,
    bound_msat,
    charge_for,
    passthrough_charge,
    per_request_msat,
    reservation_amount,
    usd_text,
)
from app.domain.services.accounts import AccountService, bearer_credential
from app.domain.sse import SseEvent, SseFramer
from app.domain.upstream import UpstreamRequest, fails_over, forwardable_headers
from app.domain.usage import Usage, normalize_usage, stream_usage

MAX_BODY_BYTES: Final = 25 * 1024 * 1024
MAX_ATTEMPTS: Final = 3
KEEPALIVE_SECONDS: Final = 15.0
CHAT: Final = "/chat/completions"
COMPLETIONS: Final = "/completions"
EMBEDDINGS: Final = "/embeddings"
RESPONSES: Final = "/responses"
MESSAGES: Final = "/messages"
PRICED_ROUTES: Final = frozenset({CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES, MESSAGES})
USAGE_INJECTED_ROUTES: Final = frozenset({CHAT, COMPLETIONS})
SSE_MEDIA_TYPE: Final = "text/event-stream"  # the HTTP edge adds `; charset=utf-8`
SSE_HEADERS: Final = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_QUEUE_SIZE: Final = 64
_T = TypeVar("_T")
_GENERATED_KEYS: Final = frozenset(
    {"content", "text", "reasoning", "reasoning_content", "refusal", "arguments", "thinking", "partial_json"}
)


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    """A paid request as the edge received it. `path` is relative to `/v1` (e.g. `/chat/completions`)."""

    path: str
    body: bytes
    headers: Sequence[tuple[str, str]]
    authorization: str | None
    request_id: str


@dataclass(frozen=True, slots=True)
class ProxyReply:
    """What goes back to the client: a whole body, or (`stream` set) an SSE byte stream written as it arrives."""

    status: int
    headers: Mapping[str, str]
    media_type: str
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None


@dataclass(frozen=True, slots=True)
class CompletedRequest:
    """The facts of one proxied request for the `request_completed` log (SPEC §14). Holds no secrets."""

    request_id: str
    key_id: str | None
    model: str | None
    provider: str | None
    prompt_tokens: int
    completion_tokens: int
    reserved_msat: int
    charged_msat: int
    status: int
    duration_ms: int
    upstream_ms: int | None
    streamed: bool
    payment_mode: str
    estimated: bool
    failovers: int

    @classmethod
    def refused(
        cls,
        request_id: str,
        key_hash: str | None,
        *,
        model: str | None,
        status: int,
        duration_ms: int,
        payment_mode: str,
    ) -> "CompletedRequest":
        """The record of a request refused before anything was reserved or forwarded: nothing charged."""
        return cls(
            request_id=request_id,
            key_id=key_id(key_hash) if key_hash else None,
            model=model,
            provider=None,
            prompt_tokens=0,
            completion_tokens=0,
            reserved_msat=0,
            charged_msat=0,
            status=status,
            duration_ms=duration_ms,
            upstream_ms=None,
            streamed=False,
            payment_mode=payment_mode,
            estimated=False,
            failovers=0,
        )


class RequestObserver(Protocol):
    def request_completed(self, record: CompletedRequest) -> None:
        """Called exactly once per proxied request that passed credential checks; must not raise."""
        ...


class SettlementObserver(Protocol):
    """Told about settlements the ledger refused for a while (the `settlement_retry`/`settlement_failed` logs).
    Gets ids, counts and error class names only; must not raise."""

    def settlement_retry(self, request_id: str, attempt: int, delay_seconds: float, error_type: str) -> None: ...

    def settlement_failed(self, request_id: str, attempts: int, charge_msat: int, error_type: str) -> None: ...


class _Unobserved:
    def settlement_retry(self, request_id: str, attempt: int, delay_seconds: float, error_type: str) -> None:
        pass

    def settlement_failed(self, request_id: str, attempts: int, charge_msat: int, error_type: str) -> None:
        pass


@dataclass(frozen=True, slots=True)
class ProxyTimings:
    """Lease, drain and keepalive periods, in seconds."""

    lease_seconds: int = 60
    drain_seconds: float = 30.0
    keepalive_seconds: float = KEEPALIVE_SECONDS
    client_stall_seconds: float = 120.0
    # A failing settlement is retried after 0.1 s, 0.2 s, ... (at most 5 s apart) for up to 3 minutes of waits.
    settle_retry_first_seconds: float = 0.1
    settle_retry_max_seconds: float = 5.0
    settle_retry_budget_seconds: float = 180.0


@dataclass(slots=True)
class _Call:
    """Mutable state of one request while it runs."""

    request: ProxyRequest
    key_hash: str
    body: dict[str, Any]
    model: str | None
    route: str
    streamed: bool
    prompt: PromptSize
    shape: RequestShape
    rate: int | None
    started: float
    matches: list[Match] = field(default_factory=list)
    reservation_id: str = ""
    reserved: Msat = field(default_factory=Msat.zero)
    offer: ModelOffer | None = None
    pricing: ModelPricing | None = None
    policy: PricingPolicy = field(default_factory=PricingPolicy)
    upstream: Upstream | None = None
    upstream_ms: int | None = None
    failovers: int = 0
    usage: Usage | None = None
    usage_final: bool = False  # the dialect's final usage event (or a whole body) was seen, not just a partial one
    generated_bytes: int = 0
    # streaming
    stream_id: str = ""
    created: int = 0
    held_usage: dict[str, Any] | None = None
    held_typed: tuple[str, dict[str, Any]] | None = None
    client_gone: bool = False
    settling: bool = False
    observed: bool = False
    deadline: asyncio.Timeout | None = None
    stream_error: DomainError | None = None


def _now_unix() -> int:
    return int(time.time())


def _decode(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        msg = "The request body is not valid JSON"
        raise InvalidJsonError(msg) from None
    if not isinstance(parsed, dict):
        msg = "The request body must be a JSON object"
        raise InvalidJsonError(msg)
    return parsed


_MULTIPART_MODEL: Final = re.compile(rb'name="model"\r\n(?:[^\r\n]+\r\n)*\r\n([^\r\n]*)\r\n')


def _is_multipart(headers: Sequence[tuple[str, str]]) -> bool:
    return any(k.lower() == "content-type" and v.lower().startswith("multipart/form-data") for k, v in headers)


def multipart_model(body: bytes) -> tuple[str, tuple[int, int]] | None:
    """The `model` field of a multipart/form-data body and its byte span, or None (SPEC §8.1)."""
    match = _MULTIPART_MODEL.search(body)
    if match is None:
        return None
    return match.group(1).decode("utf-8", errors="replace"), match.span(1)


def _encode(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def generated_bytes(payload: Mapping[str, Any]) -> int:
    """UTF-8 bytes of generated text in a body or stream chunk: content, reasoning, tool arguments, refusals
    (SPEC §4.6). Looks in `choices[].message|delta|text`, Responses `output` items and `delta`, Anthropic
    `content` blocks and `delta`."""
    total = 0
    delta = payload.get("delta")
    if isinstance(delta, str):
        total += len(delta.encode())
    elif isinstance(delta, dict):  # Anthropic content_block_delta: text, thinking or partial_json
        total += _text_bytes(delta, depth=0)
    for container in ("choices", "output", "content"):
        items = payload.get(container)
        if isinstance(items, list):
            total += _text_bytes(items, depth=0)
    return total


def _text_bytes(value: object, depth: int) -> int:
    if depth > 6:  # noqa: PLR2004 - generated text sits a few levels deep; bound the walk
        return 0
    total = 0
    if isinstance(value, list):
        for item in value:
            total += _text_bytes(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in _GENERATED_KEYS and isinstance(item, str):
                total += len(item.encode())
            elif isinstance(item, dict | list):
                total += _text_bytes(item, depth + 1)
    return total


def cost_object(breakdown: CostBreakdown, usage: Usage, estimated: bool, rate: int | None) -> dict[str, Any]:
    """`usage.cost` of SPEC §8.4; `total_usd` is a number with 8 decimals at the rate used (null without one)."""
    total_usd: float | None = None
    if rate is not None:
        total_usd = float(usd_text(breakdown.total, rate))
    return {
        "base_msats": breakdown.base.value,
        "input_msats": breakdown.input.value,
        "cache_read_msats": breakdown.cache_read.value,
        "cache_creation_msats": breakdown.cache_write.value,
        "output_msats": breakdown.output.value,
        "total_msats": breakdown.total.value,
        "total_usd": total_usd,
        "cache_read_input_tokens": usage.cache_read,
        "cache_creation_input_tokens": usage.cache_write,
        "estimated": estimated,
    }


def cost_headers(breakdown: CostBreakdown, rate: int | None) -> dict[str, str]:
    """The four `x-routstr-*cost*` headers; the USD one is omitted when the total is 0 or no rate is known."""
    headers = {
        "x-routstr-cost-msats": str(breakdown.total.value),
        "x-routstr-output-cost-msats": str(breakdown.output.value),
        "x-routstr-input-cost-msats": str(breakdown.total.value - breakdown.output.value),
    }
    if rate is not None and breakdown.total:
        headers["x-routstr-cost-usd"] = usd_text(breakdown.total, rate)
    return headers


class ProxyService:
    """Runs every paid `POST /v1/*` request (SPEC §8.1) for `Bearer sk-…` keys.

    Settlement runs in a task the client cannot cancel; each request is charged or released exactly once.
    The reservations of live requests are renewed by `renew_leases` (call every lease/3) and dead processes'
    holds are freed by `sweep` (call every lease/2).
    """

    def __init__(
        self,
        *,
        ledger: Ledger,
        clock: Clock,
        accounts: AccountService,
        upstreams: Mapping[str, Upstream],
        catalog: Callable[[], Catalog],
        rate: Callable[[], int | None],
        policy: PricingPolicy,
        observer: RequestObserver,
        timings: ProxyTimings = ProxyTimings(),
        messages_providers: frozenset[str] = frozenset(),
        settlements: SettlementObserver | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        refusal_status: Callable[[BaseException], int] | None = None,
    ) -> None:
        self._ledger = ledger
        self._refusal_status = refusal_status or domain_refusal_status
        self._settlements: SettlementObserver = settlements or _Unobserved()
        self._sleep = sleep
        self._messages_providers = messages_providers
        self._clock = clock
        self._accounts = accounts
        self._upstreams = dict(upstreams)
        self._catalog = catalog
        self._rate = rate
        self._policy = policy
        self._observer = observer
        self._timings = timings
        self._live: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._streams: dict[int, _Call] = {}

    # -- jobs ------------------------------------------------------------------------------------------------------
    @property
    def live_request_ids(self) -> frozenset[str]:
        return frozenset(self._live)

    async def renew_leases(self) -> int:
        """The heartbeat: extend the leases of this process's live reservations in one statement."""
        if not self._live:
            return 0
        expires = self._clock.now() + timedelta(seconds=self._timings.lease_seconds)
        return await self._ledger.renew_leases(sorted(self._live), expires)

    async def sweep(self) -> int:
        """Expire reservations whose holder stopped renewing (idempotent; any instance may run it)."""
        return await self._ledger.sweep_expired(self._clock.now())

    async def wait_idle(self, seconds: float) -> None:
        """Wait (at most `seconds`) for detached settlement tasks."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=seconds)

    async def shutdown(self, grace_seconds: float, settle_seconds: float = 10.0) -> None:
        """Give open streams `grace_seconds` to finish, then cut the rest: each is settled from the usage seen so
        far, else by estimate (SPEC §3 shutdown), and its client gets the cost chunk. Settlements still failing after
        `settle_seconds` more are given up (their holds stay for the sweeper), so shutdown never hangs."""
        await self.wait_idle(grace_seconds)
        loop = asyncio.get_running_loop()
        for call in list(self._streams.values()):
            if call.deadline is not None:
                call.deadline.reschedule(loop.time())
        await self.wait_idle(settle_seconds)
        left = set(self._tasks)
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left, timeout=1.0)

    # -- pipeline --------------------------------------------------------------------------------------------------
    async def handle(self, request: ProxyRequest) -> ProxyReply:
        """Raises the DomainErrors of SPEC §15 before anything is forwarded; upstream failures after reserving
        release the hold first. Every request, refused or not, gets exactly one `request_completed` record."""
        started = time.perf_counter()
        try:
            call = await self._prepare(request, started)
        except DomainError as exc:
            self._observer.request_completed(_refused_record(request, self._refusal_status(exc), started))
            raise
        ordered = self._order(call.matches, call)
        try:
            return await self._forward(call, ordered)
        except BaseException as exc:
            if call.reservation_id and not call.settling:
                await self._detached(self._release(call))
            if not call.observed:
                self._observe(call, status=self._refusal_status(exc), charged=Msat(0), estimated=False)
            raise

    async def quote(self, request: ProxyRequest) -> tuple[str | None, Msat]:
        """The request's model and the reservation `R` of its first candidate (SPEC §6.1 step 2, §6.2 creq), with no
        credential check, storage call or money moved. Raises the refusals of `handle` that precede the credential
        (400/404/413/503), and UpstreamError when no upstream serves the model."""
        anonymous = ProxyRequest(
            path=request.path,
            body=request.body,
            headers=request.headers,
            authorization="Bearer sk-" + "0" * 64,  # well-formed, so resolving it needs no storage call
            request_id=request.request_id,
        )
        call = await self._prepare(anonymous, time.perf_counter())
        ordered = self._order(call.matches, call)
        if not ordered:
            msg = "No upstream is available for this model"
            raise UpstreamError(msg)
        return call.model, self._reservation_for(call, ordered[0])

    async def _prepare(self, request: ProxyRequest, started: float) -> "_Call":
        """Steps of SPEC §8.1 before any money moves: size, JSON, model, price freshness, credential."""
        if len(request.body) > MAX_BODY_BYTES:
            msg = "The request body exceeds 25 MiB"
            raise RequestTooLargeError(msg)
        multipart = multipart_model(request.body) if _is_multipart(request.headers) else None
        body = {"model": multipart[0]} if multipart else _decode(request.body)
        route = request.path if request.path.startswith("/") else "/" + request.path
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            msg = "model must be a string"
            raise InvalidRequestError(msg, details={"param": "model"})
        if model is None and route in PRICED_ROUTES:
            msg = "model is required"
            raise InvalidRequestError(msg, details={"param": "model"})
        matches = self._candidates(model, route)
        rate = self._rate()
        if rate is None and not self._policy.fixed_mode:
            msg = "The BTC/USD rate is stale; try again shortly"
            raise PriceUnavailableError(msg)
        prompt = measure_prompt(body)
        shape = RequestShape(
            est_prompt=prompt.reservation_tokens(),
            req_max=validate_max_tokens(body),
            n_images=prompt.images,
            no_output=route == EMBEDDINGS,
        )
        key_hash = _sk_key_hash(request.authorization)
        if key_hash is None:  # a Cashu token as key, or a bad credential: the account service decides
            key_hash = (await self._accounts.authenticate(request.authorization)).key.key_hash
        return _Call(
            request=request,
            key_hash=key_hash,
            body=body,
            model=model,
            route=route,
            streamed=body.get("stream") is True,
            prompt=prompt,
            shape=shape,
            rate=rate,
            started=started,
            stream_id=f"chatcmpl-{uuid.uuid4()}",
            created=_now_unix(),
            matches=matches,
        )

    def _candidates(self, model: str | None, route: str) -> list[Match]:
        if model is None:
            if route == MESSAGES:
                msg = "model is required"
                raise InvalidRequestError(msg, details={"param": "model"})
            return []
        matches = self._catalog().lookup(model)
        if not self._policy.fixed_mode:
            matches = [m for m in matches if m.offer.pricing is not None]
        if route == MESSAGES:  # only anthropic providers serve the native Messages API (SPEC §8.2)
            matches = [m for m in matches if m.offer.provider_id in self._messages_providers]
        if not matches:
            msg = f"Model '{model}' is not offered by this node"
            raise ModelNotFoundError(msg, details={"model": model})
        return matches

    def _policy_for(self, offer: ModelOffer) -> PricingPolicy:
        return self._policy.for_provider(offer.fee_ppm)

    def _pricing_for(self, offer: ModelOffer) -> ModelPricing:
        return offer.pricing or ModelPricing.unpriced()

    def _order(self, matches: list[Match], call: _Call) -> list[ModelOffer | None]:
        if not matches:
            return [None]  # a passthrough without a model goes to the first upstream at the per-request price

        def key(match: Match) -> tuple[int, int, int, str]:
            offer = match.offer
            bound = bound_msat(self._pricing_for(offer), call.shape, self._policy_for(offer), call.rate)
            return match.level, bound.value, offer.priority, offer.provider_id

        return [m.offer for m in sorted(matches, key=key) if m.offer.provider_id in self._upstreams]

    def _reservation_for(self, call: _Call, offer: ModelOffer | None) -> Msat:
        if offer is None:
            return per_request_msat(None, self._policy, call.rate)
        pricing, policy = self._pricing_for(offer), self._policy_for(offer)
        amount = reservation_amount(pricing, call.shape, policy, call.rate)
        if call.route not in PRICED_ROUTES:
            amount = max(amount, per_request_msat(pricing, policy, call.rate))
        return amount

    async def _reserve(self, call: _Call, amount: Msat) -> None:
        """Hold `amount` under the request id; a dearer failover candidate grows the same hold in place (SPEC §5:
        CAS on the amount, `reserved += Δ` guarded by the available balance); a cheaper one keeps the bigger hold."""
        if call.reservation_id:
            if amount <= call.reserved:
                return
            try:
                await self._ledger.resize(call.reservation_id, amount, self._clock.now())
            except InsufficientBalanceError as exc:
                details = {**(exc.details or {}), "required_msat": amount.value, "model": call.model}
                raise InsufficientBalanceError(exc.message, details=details) from None
            call.reserved = amount
            return
        reservation_id = call.request.request_id
        now = self._clock.now()
        try:
            await self._ledger.reserve(
                ReservationRequest(
                    request_id=reservation_id,
                    key_hash=call.key_hash,
                    amount=amount,
                    now=now,
                    lease_expires_at=now + timedelta(seconds=self._timings.lease_seconds),
                    model=call.model,
                    provider_id=call.offer.provider_id if call.offer else None,
                )
            )
        except InsufficientBalanceError as exc:
            details = {**(exc.details or {}), "required_msat": amount.value, "model": call.model}
            raise InsufficientBalanceError(exc.message, details=details) from None
        call.reservation_id = reservation_id
        call.reserved = amount
        self._live.add(reservation_id)

    async def _release(self, call: _Call) -> None:
        reservation_id, call.reservation_id = call.reservation_id, ""
        if reservation_id:
            self._live.discard(reservation_id)
            await self._ledger.release(reservation_id, self._clock.now())

    async def _forward(self, call: _Call, candidates: list[ModelOffer | None]) -> ProxyReply:
        last_error: DomainError | None = None
        attempts = 0
        for offer in candidates:
            if attempts >= MAX_ATTEMPTS:
                break
            if offer is None and not self._upstreams:
                break
            upstream = self._upstreams[offer.provider_id] if offer else next(iter(self._upstreams.values()))
            call.offer, call.upstream = offer, upstream
            call.pricing = offer.pricing if offer else None
            call.policy = self._policy_for(offer) if offer else self._policy
            try:
                await self._reserve(call, self._reservation_for(call, offer))
            except (InsufficientBalanceError, BalanceLimitExceededError):
                if attempts == 0 or offer is candidates[-1]:
                    raise
                continue  # a pricier failover candidate the key (or its limit) cannot afford is skipped
            attempts += 1
            if attempts > 1:
                call.failovers += 1
            sent_at = time.perf_counter()
            try:
                response = await upstream.send(self._upstream_request(call, offer))
            except (UpstreamTimeoutError, UpstreamError) as exc:
                last_error = exc
                continue
            call.upstream_ms = int((time.perf_counter() - sent_at) * 1000)
            if 200 <= response.status < 300:  # noqa: PLR2004
                if call.streamed and _is_sse(response):
                    return self._start_stream(call, response)
                return await self._complete(call, response)
            if fails_over(response.status):
                last_error = _upstream_failure(response)
                await response.aclose()
                continue
            return await self._client_error(call, response)
        await self._release(call)
        self._observe(call, status=_status_of(last_error), charged=Msat(0), estimated=False)
        raise last_error or UpstreamError("No upstream is available for this model")

    def _upstream_request(self, call: _Call, offer: ModelOffer | None) -> UpstreamRequest:
        body = call.body
        changed = False
        if offer is not None and body.get("model") != offer.upstream_id:
            body = {**body, "model": offer.upstream_id}
            changed = True
        if call.streamed and call.route in USAGE_INJECTED_ROUTES:
            options = body.get("stream_options")
            if not isinstance(options, dict) or options.get("include_usage") is not True:
                body = {
                    **body,
                    "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True},
                }
                changed = True
        raw = _encode(body) if changed else call.request.body
        if _is_multipart(call.request.headers):
            raw = call.request.body  # forwarded as sent; only a differing upstream model id is swapped in
            found = multipart_model(raw)
            if found is not None and offer is not None and found[0] != offer.upstream_id:
                start, end = found[1]
                raw = raw[:start] + offer.upstream_id.encode() + raw[end:]
        return UpstreamRequest(path=call.route, body=raw, headers=forwardable_headers(call.request.headers))

    async def _client_error(self, call: _Call, response: UpstreamResponse) -> ProxyReply:
        """Upstream 4xx that is not failed over (400/413/422…): returned with `request_id`, at no charge."""
        try:
            raw = await response.read()
        finally:
            await response.aclose()
        await self._detached(self._release(call))
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            payload = None
        if isinstance(payload, dict):
            raw = _encode({**payload, "request_id": call.request.request_id})
        self._observe(call, status=response.status, charged=Msat(0), estimated=False)
        return ProxyReply(status=response.status, headers={}, media_type="application/json", body=raw)

    # -- settlement ------------------------------------------------------------------------------------------------
    def _breakdown(self, call: _Call, usage: Usage | None) -> tuple[CostBreakdown, Usage, bool]:
        """The charge for what was used; missing usage is estimated, never free (SPEC §4.6)."""
        estimated = usage is None
        if usage is None:
            usage = estimated_usage(call.prompt, call.generated_bytes)
        elif not call.usage_final:
            # A stream cut before its final usage event (e.g. Anthropic after `message_start`, whose output count is
            # a placeholder): the reported output is only a lower bound, the delivered text is billed at least.
            output = max(usage.output, estimated_output_tokens(call.generated_bytes))
            if output != usage.output:
                usage = dataclasses.replace(usage, output=output, cost_usd_pusd=None)
            estimated = True
        if call.route not in PRICED_ROUTES or (call.pricing is None and not call.policy.fixed_mode):
            # passthrough: the usage cost when reported, else the per-request price (exact, not an estimate)
            breakdown = passthrough_charge(None if estimated else usage, call.pricing, call.policy, call.rate)
            floor = per_request_msat(call.pricing, call.policy, call.rate)
            if breakdown.total < floor:
                breakdown = breakdown.with_total(floor)
            return breakdown, usage, False
        pricing = call.pricing or ModelPricing.unpriced()
        trust = call.upstream.trusts_reported_cost if call.upstream else False
        breakdown = charge_for(
            usage, pricing, call.policy, call.rate, n_images=call.shape.n_images, trust_reported_cost=trust
        )
        return breakdown, usage, estimated

    async def _settle(self, call: _Call, usage: Usage | None) -> tuple[CostBreakdown, Usage, bool, Settlement]:
        call.settling = True  # from here on the hold is charged, never released
        breakdown, usage, estimated = self._breakdown(call, usage)
        reservation_id = call.reservation_id
        try:
            settlement = await self._settle_retrying(reservation_id, breakdown.total)
        finally:
            self._live.discard(reservation_id)  # given up: the lease runs out and the sweeper frees the hold
        call.reservation_id = ""
        if settlement.collected != breakdown.total:
            breakdown = breakdown.with_total(settlement.collected)
        return breakdown, usage, estimated, settlement

    async def _settle_retrying(self, reservation_id: str, charge: Msat) -> Settlement:
        """Settle, retrying a failing ledger (doubling waits, bounded by the retry budget). The id stays live meanwhile,
        so the heartbeat keeps renewing the lease; settle is idempotent (`charge:<id>`) and still charges a hold the
        sweeper expired anyway (capped at the available balance). A released or unknown reservation is not retried."""
        timings = self._timings
        delay, waited, attempt = timings.settle_retry_first_seconds, 0.0, 1
        while True:
            try:
                return await self._ledger.settle(reservation_id, charge, self._clock.now())
            except (ReservationNotFoundError, ReservationStateError) as exc:
                self._settlements.settlement_failed(reservation_id, attempt, charge.value, type(exc).__name__)
                raise
            except Exception as exc:
                if waited + delay > timings.settle_retry_budget_seconds:
                    self._settlements.settlement_failed(reservation_id, attempt, charge.value, type(exc).__name__)
                    raise
                self._settlements.settlement_retry(reservation_id, attempt, delay, type(exc).__name__)
            try:
                await self._sleep(delay)
            except asyncio.CancelledError:
                self._settlements.settlement_failed(reservation_id, attempt, charge.value, "CancelledError")
                raise
            waited += delay
            attempt += 1
            delay = min(delay * 2, timings.settle_retry_max_seconds)

    async def _detached(self, work: Coroutine[Any, Any, _T]) -> _T:
        """Run `work` in a task the caller's cancellation cannot interrupt, and wait for it."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- non-streamed ----------------------------------------------------------------------------------------------
    async def _complete(self, call: _Call, response: UpstreamResponse) -> ProxyReply:
        try:
            raw = await response.read()
        finally:
            await response.aclose()
        payload: Any = None
        if (response.content_type or "").startswith("application/json") or raw[:1] in {b"{", b"["}:
            try:
                payload = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                payload = None
        reported: Usage | None = None
        call.usage_final = True  # a whole body: whatever usage it reports is final
        if isinstance(payload, dict):
            reported = normalize_usage(payload)
            call.generated_bytes = generated_bytes(payload)
        breakdown, usage, estimated, settlement = await self._detached(self._settle(call, reported))
        headers = cost_headers(breakdown, call.rate)
        if isinstance(payload, dict):
            block = payload.get("usage")
            block = dict(block) if isinstance(block, dict) else _usage_block(usage, call.route)
            block["cost"] = cost_object(breakdown, usage, estimated, call.rate)
            block["cost_sats"] = breakdown.total.sats_rounded_up()
            block["remaining_balance_msats"] = settlement.balance_after.value
            payload["usage"] = block
            raw = _encode(payload)
        self._observe(call, status=response.status, charged=breakdown.total, estimated=estimated, usage=usage)
        media = response.content_type or "application/json"
        return ProxyReply(status=response.status, headers=headers, media_type=media, body=raw)

    # -- streamed --------------------------------------------------------------------------------------------------
    def _start_stream(self, call: _Call, response: UpstreamResponse) -> ProxyReply:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(_QUEUE_SIZE)
        self._spawn(self._pump(call, response, queue))
        return ProxyReply(
            status=200, headers=dict(SSE_HEADERS), media_type=SSE_MEDIA_TYPE, stream=self._relay(call, queue)
        )

    async def _relay(self, call: _Call, queue: "asyncio.Queue[bytes | None]") -> AsyncIterator[bytes]:
        """The client side: writes each event as soon as the pump parsed it; `: keepalive` after silence."""
        keepalive = self._timings.keepalive_seconds
        finished = False
        try:
            while True:
                try:
                    async with asyncio.timeout(keepalive):
                        item = await queue.get()
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if item is None:
                    finished = True
                    return
                parts, ended = [item], False
                while not queue.empty():  # write what is already parsed in one go; never wait for more
                    more = queue.get_nowait()
                    if more is None:
                        ended = True
                        break
                    parts.append(more)
                yield item if len(parts) == 1 else b"".join(parts)
                if ended:
                    finished = True
                    return
        finally:
            if not finished:
                self._client_left(call, queue)

    def _client_left(self, call: _Call, queue: "asyncio.Queue[bytes | None]") -> None:
        """The client disconnected mid-stream: keep reading the upstream for at most the drain period."""
        call.client_gone = True
        while not queue.empty():
            queue.get_nowait()
        if call.deadline is not None:
            with contextlib.suppress(RuntimeError):
                loop = asyncio.get_running_loop()
                call.deadline.reschedule(loop.time() + self._timings.drain_seconds)

    async def _emit(self, call: _Call, queue: "asyncio.Queue[bytes | None]", data: bytes) -> None:
        """Hand an event to the client side; a client that stops reading for too long counts as gone."""
        if call.client_gone:
            return
        if not queue.full():
            queue.put_nowait(data)
            return
        try:
            async with asyncio.timeout(self._timings.client_stall_seconds):
                await queue.put(data)
        except TimeoutError:
            self._client_left(call, queue)

    async def _pump(self, call: _Call, response: UpstreamResponse, queue: "asyncio.Queue[bytes | None]") -> None:
        """The detached upstream reader: relays, holds the usage event, settles once, then ends the stream."""
        status = 200
        self._streams[id(call)] = call
        try:
            try:
                async with asyncio.timeout(None) as deadline:
                    call.deadline = deadline
                    if call.client_gone:
                        deadline.reschedule(asyncio.get_running_loop().time() + self._timings.drain_seconds)
                    await self._read_stream(call, response, queue)
            except TimeoutError:
                pass  # drain period after a disconnect ran out: bill what was seen
            except DomainError as exc:
                call.stream_error = exc
                status = 502
            finally:
                call.deadline = None
                await response.aclose()
            if call.stream_error is not None:
                error = {
                    "error": {"message": call.stream_error.message, "type": "upstream_error", "code": "upstream_error"},
                    "request_id": call.request.request_id,
                }
                await self._emit(call, queue, b"data: " + _encode(error) + b"\n\n")
            breakdown, usage, estimated, _settlement = await self._settle(call, call.usage)
            for tail in self._stream_tail(call, breakdown, usage, estimated):
                await self._emit(call, queue, tail)
            self._observe(call, status=status, charged=breakdown.total, estimated=estimated, usage=usage)
        except BaseException:
            if call.reservation_id and not call.settling:
                await self._release(call)
            self._observe(call, status=500, charged=Msat(0), estimated=False)
            raise
        finally:
            self._streams.pop(id(call), None)
            if not call.client_gone:
                await self._emit_end(call, queue)

    async def _emit_end(self, call: _Call, queue: "asyncio.Queue[bytes | None]") -> None:
        try:
            async with asyncio.timeout(self._timings.client_stall_seconds):
                await queue.put(None)
        except TimeoutError:
            call.client_gone = True

    async def _read_stream(self, call: _Call, response: UpstreamResponse, queue: "asyncio.Queue[bytes | None]") -> None:
        framer = SseFramer()
        async for chunk in response.chunks():
            events = framer.feed(chunk)
            if len(events) == 1:
                out = self._on_event(call, events[0])
                if out is not None:
                    await self._emit(call, queue, out)
            elif events:  # the events of one read go out together, as soon as they are parsed
                outs = [o for o in (self._on_event(call, e) for e in events) if o is not None]
                if outs:
                    await self._emit(call, queue, b"".join(outs))
        for event in framer.finish():
            out = self._on_event(call, event)
            if out is not None:
                await self._emit(call, queue, out)

    def _on_event(self, call: _Call, event: SseEvent) -> bytes | None:  # noqa: PLR0911 - one exit per event kind
        """One upstream event -> what the client gets now (None: dropped or held until settlement)."""
        data = event.data
        if data is None:
            return event.encode()
        if data == "[DONE]":
            return None  # re-sent after the cost chunk
        try:
            payload = json.loads(data)
        except ValueError:
            return event.encode()
        if not isinstance(payload, dict):
            return event.encode()
        call.generated_bytes += generated_bytes(payload)
        kind = payload.get("type")
        if call.route == MESSAGES:  # Anthropic: everything passes through; usage is folded as it comes
            call.usage = stream_usage(call.usage, payload)
            if kind == "message_delta" and isinstance(payload.get("usage"), dict):
                call.usage_final = True
            return event.encode()
        if kind in {"response.completed", "response.incomplete"}:
            call.usage = normalize_usage(payload) or call.usage
            call.usage_final = True
            call.held_typed = (event.event or str(kind), payload)
            return None
        usage_value = payload.get("usage")
        if isinstance(usage_value, dict):
            found = normalize_usage(payload)
            if found is not None:
                call.usage = found
                call.usage_final = True
                call.held_usage = payload
                choices = payload.get("choices")
                if not choices:
                    return None  # the usage-only chunk is re-emitted with its cost before [DONE]
                payload = {k: v for k, v in payload.items() if k != "usage"}
                return SseEvent(data=_json_text(payload), event=event.event, id=event.id, retry=event.retry).encode()
        if "choices" in payload and not payload.get("id"):
            payload["id"] = call.stream_id
            return SseEvent(data=_json_text(payload), event=event.event, id=event.id, retry=event.retry).encode()
        if "choices" in payload and isinstance(payload.get("id"), str):
            call.stream_id = payload["id"]
        return event.encode()

    def _stream_tail(self, call: _Call, breakdown: CostBreakdown, usage: Usage, estimated: bool) -> list[bytes]:
        cost = cost_object(breakdown, usage, estimated, call.rate)
        sats = breakdown.total.sats_rounded_up()
        if call.route == MESSAGES:
            return [SseEvent(data=_json_text({**cost, "cost_sats": sats}), event="cost").encode()]
        if call.held_typed is not None or call.route == RESPONSES:
            if call.held_typed is None:
                return []
            name, payload = call.held_typed
            response = payload.get("response")
            response = dict(response) if isinstance(response, dict) else {}
            block = response.get("usage")
            block = dict(block) if isinstance(block, dict) else _usage_block(usage, RESPONSES)
            block["cost"] = cost
            block["cost_sats"] = sats
            response["usage"] = block
            return [SseEvent(data=_json_text({**payload, "response": response}), event=name).encode()]
        if call.held_usage is not None:
            chunk = {**call.held_usage, "choices": []}
            block = dict(chunk["usage"])
        else:
            chunk = {
                "id": call.stream_id,
                "object": "chat.completion.chunk" if call.route == CHAT else "text_completion",
                "created": call.created,
                "model": call.model,
                "choices": [],
            }
            block = _usage_block(usage, call.route)
        block["cost"] = cost
        block["cost_sats"] = sats
        chunk["usage"] = block
        return [b"data: " + _encode(chunk) + b"\n\n", b"data: [DONE]\n\n"]

    # -- logging ---------------------------------------------------------------------------------------------------
    def _observe(self, call: _Call, *, status: int, charged: Msat, estimated: bool, usage: Usage | None = None) -> None:
        call.observed = True
        self._observer.request_completed(
            CompletedRequest(
                request_id=call.request.request_id,
                key_id=key_id(call.key_hash),
                model=call.model,
                provider=call.upstream.provider_id if call.upstream else None,
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.output if usage else 0,
                reserved_msat=call.reserved.value,
                charged_msat=charged.value,
                status=status,
                duration_ms=int((time.perf_counter() - call.started) * 1000),
                upstream_ms=call.upstream_ms,
                streamed=call.streamed,
                payment_mode="key",
                estimated=estimated,
                failovers=call.failovers,
            )
        )


def _sk_key_hash(authorization: str | None) -> str | None:
    """The hash of a well-formed `Bearer sk-…` key, else None. The key's existence and expiry are checked by the
    reservation itself (one database round trip instead of two: the ledger raises InvalidApiKeyError and
    KeyExpiredError)."""
    credential = bearer_credential(authorization)
    if credential is None or not looks_like_api_key(credential):
        return None
    return hash_api_key(normalize_api_key(credential))


def _json_text(payload: object) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def _usage_block(usage: Usage, route: str) -> dict[str, Any]:
    if route == RESPONSES:
        return {
            "input_tokens": usage.prompt_tokens,
            "output_tokens": usage.output,
            "total_tokens": usage.total_tokens,
        }
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.output,
        "total_tokens": usage.total_tokens,
    }


def _is_sse(response: UpstreamResponse) -> bool:
    return (response.content_type or "").startswith("text/event-stream")


def _upstream_failure(response: UpstreamResponse) -> DomainError:
    if response.status == 429:  # noqa: PLR2004
        return UpstreamRateLimitedError("The upstream is rate limiting requests", retry_after=response.retry_after)
    if response.status == 408:  # noqa: PLR2004
        return UpstreamError("The upstream timed out the request")
    return UpstreamError(f"The upstream answered {response.status}")


def _refused_record(request: ProxyRequest, status: int, started: float) -> CompletedRequest:
    """The log record of a request refused before a credential was resolved: nothing reserved or charged."""
    return CompletedRequest.refused(
        request.request_id,
        _sk_key_hash(request.authorization),
        model=None,
        status=status,
        duration_ms=int((time.perf_counter() - started) * 1000),
        payment_mode="key",
    )


_STATUS_BY_REFUSAL: Final[tuple[tuple[type[DomainError], int], ...]] = (
    (InvalidJsonError, 400),
    (InvalidRequestError, 400),
    (RequestTooLargeError, 413),
    (ModelNotFoundError, 404),
    (PriceUnavailableError, 503),
    (MissingApiKeyError, 401),
)


def domain_refusal_status(error: BaseException) -> int:
    """The status a refused request ends with, for the log line, as far as the domain knows it (the composition root
    passes the API's full mapping instead; errors not listed here, e.g. Cashu ones, are 500 here)."""
    for kind, status in _STATUS_BY_REFUSAL:
        if isinstance(error, kind):
            return status
    if isinstance(error, InsufficientBalanceError | BalanceLimitExceededError | PaymentRequiredError):
        return 402
    if isinstance(error, KeyExpiredError):
        return 403
    if isinstance(error, InvalidApiKeyError):
        return 401
    if isinstance(error, UpstreamError | UpstreamTimeoutError | UpstreamRateLimitedError):
        return _status_of(error)
    return 499 if isinstance(error, asyncio.CancelledError) else 500


def _status_of(error: DomainError | None) -> int:
    if isinstance(error, UpstreamTimeoutError):
        return 504
    if isinstance(error, UpstreamRateLimitedError):
        return 429
    return 502
