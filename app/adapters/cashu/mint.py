"""`HttpCashuMint`: the Mint port over the NUT-01..09 HTTP API, with per-mint concurrency limits and safe retries."""

import asyncio
import contextlib
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NoReturn

import httpx
import structlog

from app.adapters.cashu import crypto
from app.domain.cashu import (
    BlindSignature,
    Dleq,
    Keyset,
    MeltQuote,
    MeltResult,
    MintInfo,
    MintQuote,
    PendingOutput,
    Proof,
    ProofState,
    ProofStateKind,
    QuoteState,
    input_fee,
    resolve_keyset_id,
    split_amount,
)
from app.domain.errors import (
    InvalidCashuTokenError,
    MintError,
    MintOutcomeUnknownError,
    MintRateLimitedError,
    MintUnreachableError,
    TokenAlreadySpentError,
    TokenPendingError,
    UnsupportedUnitError,
)

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]

# NUT error codes (https://github.com/cashubtc/nuts/blob/main/error_codes.md)
CODE_PROOFS_SPENT = 11001
CODE_PROOFS_PENDING = 11002
CODE_KEYSET_INACTIVE = 12002
# Codes that mean the inputs themselves are bad: the token is invalid rather than the mint broken.
INVALID_INPUT_CODES = frozenset({10001, 10003, 11007, 12001})
_HTTP_TOO_MANY_REQUESTS = 429
_HTTP_SERVER_ERROR = 500
_HTTP_CLIENT_ERROR = 400
# Transport failures after which the request certainly never reached the mint, so any call may be retried.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class HttpCashuMint:
    """Talks to any number of mints over one shared `httpx.AsyncClient` (owned and closed by the container).

    - `timeout_seconds` bounds each attempt; `max_concurrency` bounds in-flight calls per mint (0 = unlimited).
    - `retry_max_attempts` attempts are made on transport failures and 429 only; backoff is `2^n` s plus up to 1 s
      of jitter, or the mint's `Retry-After`. State-changing calls (swap, mint, melt) are retried only when the
      request surely never left (connect failures) or on 429; otherwise MintOutcomeUnknownError.
    - Keysets are cached per mint for `keyset_ttl_seconds` (a rotated active keyset is noticed within that time),
      and refetched at once when an unknown id is met or the mint calls a keyset inactive.
    - `sleep`, `jitter` and `clock` are injectable so tests need no real waiting.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        timeout_seconds: float = 30.0,
        max_concurrency: int = 4,
        retry_max_attempts: int = 3,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        keyset_ttl_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._timeout = timeout_seconds
        self._max_concurrency = max_concurrency
        self._attempts = max(1, retry_max_attempts)
        self._sleep = sleep
        self._jitter = jitter
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._keysets: dict[str, dict[str, Keyset]] = {}
        self._keysets_loaded_at: dict[str, float] = {}
        self._keyset_ttl = keyset_ttl_seconds
        self._clock = clock

    # -- port: keys and fees -----------------------------------------------------------------------------------------
    async def info(self, mint_url: str) -> MintInfo:
        data = await self._call(mint_url, "GET", "/v1/info", operation="info")
        nuts = data.get("nuts")
        supported: set[int] = set()
        if isinstance(nuts, dict):
            for key, value in nuts.items():
                if str(key).isdigit() and not (isinstance(value, dict) and value.get("disabled") is True):
                    supported.add(int(key))
        name, version = data.get("name"), data.get("version")
        return MintInfo(
            name=name if isinstance(name, str) else None,
            version=version if isinstance(version, str) else None,
            nuts=frozenset(supported),
        )

    async def keysets(self, mint_url: str) -> Sequence[Keyset]:
        return list((await self._load_keysets(mint_url)).values())

    async def input_fee(self, mint_url: str, proofs: Sequence[Proof]) -> int:
        resolved = await self._resolve(mint_url, proofs)
        keysets = await self._load_keysets(mint_url)
        return input_fee(resolved, {kid: ks.input_fee_ppk for kid, ks in keysets.items()})

    def proof_ys(self, proofs: Sequence[Proof]) -> list[str]:
        return [crypto.point_hex(crypto.secret_y(p.secret)) for p in proofs]

    # -- port: outputs -----------------------------------------------------------------------------------------------
    async def prepare_outputs(self, mint_url: str, unit: str, amount: int) -> Sequence[PendingOutput]:
        keyset = await self._active_keyset(mint_url, unit)
        return [_new_output(keyset.id, part) for part in split_amount(amount, keyset.amounts)]

    async def blank_outputs(self, mint_url: str, unit: str, fee_reserve: int) -> Sequence[PendingOutput]:
        keyset = await self._active_keyset(mint_url, unit)
        # NUT-08: ceil(log2(fee_reserve)) outputs (at least one) can return any change up to the reserve.
        count = max(1, math.ceil(math.log2(fee_reserve))) if fee_reserve > 0 else 0
        return [_new_output(keyset.id, 1) for _ in range(count)]

    # -- port: swap, state, restore ----------------------------------------------------------------------------------
    async def swap(self, mint_url: str, inputs: Sequence[Proof], outputs: Sequence[PendingOutput]) -> Sequence[Proof]:
        resolved = await self._resolve(mint_url, inputs)
        await self._verify_input_dleqs(mint_url, resolved)
        body = {"inputs": [_proof_json(p) for p in resolved], "outputs": [_output_json(o) for o in outputs]}
        data = await self._call(mint_url, "POST", "/v1/swap", json=body, operation="swap", idempotent=False)
        return await self._unblind(mint_url, outputs, _signatures(data.get("signatures")), exact=True)

    async def check_state(self, mint_url: str, ys: Sequence[str]) -> Sequence[ProofState]:
        if not ys:
            return []
        data = await self._call(mint_url, "POST", "/v1/checkstate", json={"Ys": list(ys)}, operation="checkstate")
        states: dict[str, ProofState] = {}
        raw_states = data.get("states")
        if not isinstance(raw_states, list):
            _malformed(mint_url, "checkstate", "no states")
        for item in raw_states:
            try:
                state = ProofState(y=str(item["Y"]), state=ProofStateKind(item["state"]), witness=item.get("witness"))
            except (KeyError, TypeError, ValueError):
                _malformed(mint_url, "checkstate", "bad state entry")
            states[state.y] = state
        missing = [y for y in ys if y not in states]
        if missing:
            _malformed(mint_url, "checkstate", "states missing")
        return [states[y] for y in ys]

    async def restore(self, mint_url: str, outputs: Sequence[PendingOutput]) -> Sequence[Proof]:
        if not outputs:
            return []
        body = {"outputs": [_output_json(o) for o in outputs]}
        data = await self._call(mint_url, "POST", "/v1/restore", json=body, operation="restore")
        returned = data.get("outputs")
        signatures = _signatures(data.get("signatures", data.get("promises")))
        if not isinstance(returned, list) or len(returned) != len(signatures):
            _malformed(mint_url, "restore", "outputs and signatures differ")
        by_b = {o.b_: o for o in outputs}
        matched: list[PendingOutput] = []
        for item in returned:
            b_ = item.get("B_") if isinstance(item, dict) else None
            if b_ not in by_b:
                _malformed(mint_url, "restore", "unknown output")
            matched.append(by_b[b_])
        return await self._unblind(mint_url, matched, signatures, exact=True)

    # -- port: NUT-04 / NUT-05 ---------------------------------------------------------------------------------------
    async def create_mint_quote(self, mint_url: str, unit: str, amount: int) -> MintQuote:
        body = {"amount": amount, "unit": unit}
        data = await self._call(mint_url, "POST", "/v1/mint/quote/bolt11", json=body, operation="mint_quote")
        return _mint_quote(mint_url, data, unit, amount)

    async def get_mint_quote(self, mint_url: str, quote_id: str) -> MintQuote:
        data = await self._call(mint_url, "GET", f"/v1/mint/quote/bolt11/{quote_id}", operation="mint_quote_state")
        return _mint_quote(mint_url, data, None, None)

    async def mint(self, mint_url: str, quote_id: str, outputs: Sequence[PendingOutput]) -> Sequence[Proof]:
        body = {"quote": quote_id, "outputs": [_output_json(o) for o in outputs]}
        data = await self._call(mint_url, "POST", "/v1/mint/bolt11", json=body, operation="mint", idempotent=False)
        return await self._unblind(mint_url, outputs, _signatures(data.get("signatures")), exact=True)

    async def create_melt_quote(self, mint_url: str, unit: str, request: str) -> MeltQuote:
        body = {"request": request, "unit": unit}
        data = await self._call(mint_url, "POST", "/v1/melt/quote/bolt11", json=body, operation="melt_quote")
        return _melt_quote(mint_url, data, unit, request)

    async def get_melt_quote(
        self, mint_url: str, quote_id: str, blank_outputs: Sequence[PendingOutput] = ()
    ) -> MeltResult:
        data = await self._call(mint_url, "GET", f"/v1/melt/quote/bolt11/{quote_id}", operation="melt_quote_state")
        return await self._melt_result(mint_url, _melt_quote(mint_url, data, None, None), blank_outputs)

    async def melt(
        self, mint_url: str, quote_id: str, inputs: Sequence[Proof], blank_outputs: Sequence[PendingOutput] = ()
    ) -> MeltResult:
        resolved = await self._resolve(mint_url, inputs)
        body: dict[str, Any] = {"quote": quote_id, "inputs": [_proof_json(p) for p in resolved]}
        if blank_outputs:
            body["outputs"] = [_output_json(o) for o in blank_outputs]
        data = await self._call(mint_url, "POST", "/v1/melt/bolt11", json=body, operation="melt", idempotent=False)
        return await self._melt_result(mint_url, _melt_quote(mint_url, data, None, None), blank_outputs)

    # -- keysets -----------------------------------------------------------------------------------------------------
    async def _load_keysets(self, mint_url: str, *, refresh: bool = False) -> dict[str, Keyset]:
        cached = self._keysets.get(mint_url)
        fresh = self._clock() - self._keysets_loaded_at.get(mint_url, -math.inf) < self._keyset_ttl
        if cached is not None and fresh and not refresh:
            return cached
        data = await self._call(mint_url, "GET", "/v1/keysets", operation="keysets")
        entries = data.get("keysets")
        if not isinstance(entries, list):
            _malformed(mint_url, "keysets", "no keysets")
        previous = cached or {}
        loaded: dict[str, Keyset] = {}
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                _malformed(mint_url, "keysets", "bad keyset entry")
            keyset_id: str = entry["id"]
            old = previous.get(keyset_id)
            keys = old.keys if old is not None else await self._fetch_keys(mint_url, keyset_id)
            fee = entry.get("input_fee_ppk") or 0
            expiry = entry.get("final_expiry")
            unit = entry.get("unit")
            if type(fee) is not int or fee < 0 or not isinstance(unit, str):
                _malformed(mint_url, "keysets", "bad keyset fields")
            if not crypto.keyset_id_matches(keyset_id, keys, unit, fee, expiry if isinstance(expiry, int) else None):
                _malformed(mint_url, "keysets", "keyset id does not match its keys")
            loaded[keyset_id] = Keyset(
                id=keyset_id,
                unit=unit,
                active=entry.get("active") is True,
                input_fee_ppk=fee,
                keys=keys,
                final_expiry=expiry if isinstance(expiry, int) else None,
            )
        self._keysets[mint_url] = loaded
        self._keysets_loaded_at[mint_url] = self._clock()
        return loaded

    async def _fetch_keys(self, mint_url: str, keyset_id: str) -> dict[int, str]:
        data = await self._call(mint_url, "GET", f"/v1/keys/{keyset_id}", operation="keys")
        entries = data.get("keysets")
        if not isinstance(entries, list):
            _malformed(mint_url, "keys", "no keysets")
        for entry in entries:
            if isinstance(entry, dict) and entry.get("id") == keyset_id and isinstance(entry.get("keys"), dict):
                keys: dict[int, str] = {}
                for amount, key in entry["keys"].items():
                    try:
                        keys[int(amount)] = crypto.point_hex(crypto.point(key))
                    except (TypeError, ValueError):
                        _malformed(mint_url, "keys", "bad public key")
                return keys
        return _malformed(mint_url, "keys", "keyset missing from reply")

    async def _keyset(self, mint_url: str, keyset_id: str) -> Keyset:
        """The keyset a (possibly short) id names; refetches the list once for ids not seen yet."""
        keysets = await self._load_keysets(mint_url)
        full = resolve_keyset_id(keyset_id, keysets)
        if full is None:
            keysets = await self._load_keysets(mint_url, refresh=True)
            full = resolve_keyset_id(keyset_id, keysets)
        if full is None:
            msg = "Invalid Cashu token: the mint does not know its keyset"
            raise InvalidCashuTokenError(msg)
        return keysets[full]

    async def _active_keyset(self, mint_url: str, unit: str) -> Keyset:
        keysets = await self._load_keysets(mint_url)
        candidates = [k for k in keysets.values() if k.active and k.unit == unit]
        if not candidates:
            msg = f"The mint has no active keyset for unit {unit!r}"
            raise UnsupportedUnitError(msg)
        return min(candidates, key=lambda k: (k.input_fee_ppk, k.id))  # cheapest to spend later

    async def _resolve(self, mint_url: str, proofs: Sequence[Proof]) -> list[Proof]:
        resolved: list[Proof] = []
        for proof in proofs:
            keyset = await self._keyset(mint_url, proof.keyset_id)
            if keyset.id == proof.keyset_id:
                resolved.append(proof)
            else:
                resolved.append(
                    Proof(
                        amount=proof.amount,
                        keyset_id=keyset.id,
                        secret=proof.secret,
                        c=proof.c,
                        dleq=proof.dleq,
                        witness=proof.witness,
                    )
                )
        return resolved

    async def _verify_input_dleqs(self, mint_url: str, proofs: Sequence[Proof]) -> None:
        for proof in proofs:
            if proof.dleq is None or proof.dleq.r is None:
                continue
            keyset = await self._keyset(mint_url, proof.keyset_id)
            key = keyset.keys.get(proof.amount)
            if key is None or not crypto.verify_proof_dleq(
                mint_key=key, secret=proof.secret, c=proof.c, e=proof.dleq.e, s=proof.dleq.s, r=proof.dleq.r
            ):
                msg = "Invalid Cashu token: a DLEQ proof does not verify"
                raise InvalidCashuTokenError(msg)

    # -- unblinding --------------------------------------------------------------------------------------------------
    async def _unblind(
        self,
        mint_url: str,
        outputs: Sequence[PendingOutput],
        signatures: Sequence[BlindSignature],
        *,
        exact: bool = False,
    ) -> list[Proof]:
        """Unblind signatures in output order; `exact` demands one per output (blank outputs may get fewer)."""
        if len(signatures) > len(outputs) or (exact and len(signatures) != len(outputs)):
            _malformed(mint_url, "unblind", "signature count does not match the outputs")
        proofs: list[Proof] = []
        for output, signature in zip(outputs, signatures, strict=False):
            if exact and signature.amount != output.amount:
                _malformed(mint_url, "unblind", "signature amount differs from its output")
            keyset = await self._keyset_for_signature(mint_url, signature.keyset_id)
            mint_key = keyset.keys.get(signature.amount)
            if mint_key is None:
                _malformed(mint_url, "unblind", "signature amount has no key")
            if signature.dleq is not None and not crypto.verify_signature_dleq(
                mint_key=mint_key, b_=output.b_, c_=signature.c_, e=signature.dleq.e, s=signature.dleq.s
            ):
                _malformed(mint_url, "unblind", "DLEQ proof on a signature does not verify")
            try:
                c = crypto.unblind(crypto.point(signature.c_), int(output.blinding_factor, 16), crypto.point(mint_key))
            except ValueError:
                _malformed(mint_url, "unblind", "signature is not a point")
            dleq = None
            if signature.dleq is not None:
                dleq = Dleq(e=signature.dleq.e, s=signature.dleq.s, r=output.blinding_factor)
            proofs.append(
                Proof(
                    amount=signature.amount,
                    keyset_id=keyset.id,
                    secret=output.secret,
                    c=crypto.point_hex(c),
                    dleq=dleq,
                )
            )
        return proofs

    async def _keyset_for_signature(self, mint_url: str, keyset_id: str) -> Keyset:
        try:
            return await self._keyset(mint_url, keyset_id)
        except InvalidCashuTokenError:
            return _malformed(mint_url, "unblind", "signature from an unknown keyset")

    async def _melt_result(self, mint_url: str, quote: MeltQuote, blank_outputs: Sequence[PendingOutput]) -> MeltResult:
        change: list[Proof] = []
        if quote.change and blank_outputs:
            change = await self._unblind(mint_url, blank_outputs, quote.change)
        return MeltResult(quote=quote, change=tuple(change))

    # -- HTTP --------------------------------------------------------------------------------------------------------
    def _limit(self, mint_url: str) -> contextlib.AbstractAsyncContextManager[object]:
        if self._max_concurrency <= 0:
            return contextlib.nullcontext()
        semaphore = self._semaphores.get(mint_url)
        if semaphore is None:
            semaphore = self._semaphores[mint_url] = asyncio.Semaphore(self._max_concurrency)
        return semaphore

    async def _call(
        self,
        mint_url: str,
        method: str,
        path: str,
        *,
        operation: str,
        json: Mapping[str, Any] | None = None,
        idempotent: bool = True,
    ) -> dict[str, Any]:
        """One logical call: attempts with backoff; returns the JSON object of a 2xx reply or raises a domain error."""
        url = mint_url.rstrip("/") + path
        retry_after: int | None = None
        failure = "transport"
        for attempt in range(self._attempts):
            if attempt:
                await self._sleep(retry_after if retry_after is not None else 2 ** (attempt - 1) + self._jitter())
            retry_after = None
            try:
                async with self._limit(mint_url):
                    response = await self._client.request(method, url, json=json, timeout=self._timeout)
            except _NOT_SENT:
                failure = "transport"
            except httpx.TransportError as exc:
                if not idempotent:
                    log.warning("mint_call_failed", mint=mint_url, operation=operation, kind="outcome_unknown")
                    msg = f"The mint did not answer {operation}; its outcome is unknown"
                    raise MintOutcomeUnknownError(msg, details={"mint": mint_url}) from exc
                failure = "transport"
            else:
                if response.status_code != _HTTP_TOO_MANY_REQUESTS:
                    return self._parse(mint_url, operation, response, idempotent=idempotent)
                failure = "rate_limited"
                retry_after = _retry_after(response)
                if retry_after is not None and retry_after > self._timeout:
                    break  # the mint asks for a longer pause than one call may take
            log.info("mint_call_retry", mint=mint_url, operation=operation, kind=failure, attempt=attempt + 1)
        log.warning("mint_call_failed", mint=mint_url, operation=operation, kind=failure)
        if failure == "rate_limited":
            msg = "The mint is rate limiting the node"
            raise MintRateLimitedError(msg, retry_after_seconds=retry_after, details={"mint": mint_url})
        msg = "The mint is unreachable"
        raise MintUnreachableError(msg, details={"mint": mint_url})

    def _parse(self, mint_url: str, operation: str, response: httpx.Response, *, idempotent: bool) -> dict[str, Any]:
        status = response.status_code
        if status < _HTTP_CLIENT_ERROR:
            try:
                data = response.json()
            except ValueError:
                data = None
            if not isinstance(data, dict):
                _malformed(mint_url, operation, "reply is not a JSON object")
            return data
        code, detail = _error_body(response)
        log.warning("mint_call_failed", mint=mint_url, operation=operation, kind="error", status=status, code=code)
        if code == CODE_PROOFS_SPENT:
            msg = "The Cashu token has already been spent"
            raise TokenAlreadySpentError(msg)
        if code == CODE_PROOFS_PENDING:
            msg = "The Cashu token is pending at the mint"
            raise TokenPendingError(msg)
        if code == CODE_KEYSET_INACTIVE:
            self._keysets_loaded_at.pop(mint_url, None)  # outputs named a rotated keyset: reload next time
        if code in INVALID_INPUT_CODES:
            msg = f"Invalid Cashu token: the mint refused it ({detail})"
            raise InvalidCashuTokenError(msg)
        if status >= _HTTP_SERVER_ERROR and not idempotent:
            msg = f"The mint failed during {operation}; its outcome is unknown"
            raise MintOutcomeUnknownError(msg, details={"mint": mint_url, "status": status})
        msg = f"The mint refused {operation}: {detail}"
        raise MintError(msg, details={"mint": mint_url, "status": status, "mint_code": code})


# -- wire mapping ----------------------------------------------------------------------------------------------------
def _malformed(mint_url: str, operation: str, reason: str) -> NoReturn:
    log.warning("mint_call_failed", mint=mint_url, operation=operation, kind="malformed", reason=reason)
    msg = f"Unexpected reply from the mint ({operation}: {reason})"
    raise MintError(msg, details={"mint": mint_url})


def _error_body(response: httpx.Response) -> tuple[int | None, str]:
    try:
        data = response.json()
    except ValueError:
        return None, f"HTTP {response.status_code}"
    if not isinstance(data, dict):
        return None, f"HTTP {response.status_code}"
    code = data.get("code")
    detail = data.get("detail", data.get("error", f"HTTP {response.status_code}"))
    return (code if type(code) is int else None), str(detail)[:200]


def _retry_after(response: httpx.Response) -> int | None:
    value = response.headers.get("retry-after", "").strip()
    return int(value) if value.isdigit() else None


def _new_output(keyset_id: str, amount: int) -> PendingOutput:
    secret = secrets.token_hex(32)
    r = crypto.random_scalar()
    b_ = crypto.blind_message(secret, r)
    return PendingOutput(
        amount=amount, keyset_id=keyset_id, secret=secret, blinding_factor=f"{r:064x}", b_=crypto.point_hex(b_)
    )


def _output_json(output: PendingOutput) -> dict[str, Any]:
    return {"amount": output.amount, "id": output.keyset_id, "B_": output.b_}


def _proof_json(proof: Proof) -> dict[str, Any]:
    data: dict[str, Any] = {"amount": proof.amount, "id": proof.keyset_id, "secret": proof.secret, "C": proof.c}
    if proof.witness is not None:
        data["witness"] = proof.witness
    return data


def _signatures(value: object) -> list[BlindSignature]:
    if not isinstance(value, list):
        msg = "Unexpected reply from the mint (no signatures)"
        raise MintError(msg)
    signatures: list[BlindSignature] = []
    for item in value:
        try:
            dleq_data = item.get("dleq")
            dleq = None if dleq_data is None else Dleq(e=str(dleq_data["e"]), s=str(dleq_data["s"]))
            amount = item["amount"]
            if type(amount) is not int or amount <= 0:
                raise ValueError(amount)  # noqa: TRY301 - folded into the malformed-reply error below
            signatures.append(BlindSignature(amount=amount, keyset_id=str(item["id"]), c_=str(item["C_"]), dleq=dleq))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            msg = "Unexpected reply from the mint (malformed signature)"
            raise MintError(msg) from exc
    return signatures


def _quote_state(data: Mapping[str, Any]) -> QuoteState:
    state = data.get("state")
    if isinstance(state, str) and state in QuoteState.__members__:
        return QuoteState(state)
    paid = data.get("paid")  # mints before NUT-04/05 `state`
    return QuoteState.PAID if paid is True else QuoteState.UNPAID


def _mint_quote(mint_url: str, data: Mapping[str, Any], unit: str | None, amount: int | None) -> MintQuote:
    quote_id, request = data.get("quote"), data.get("request")
    if not isinstance(quote_id, str) or not isinstance(request, str):
        _malformed(mint_url, "mint_quote", "missing quote or request")
    reply_amount = data.get("amount")
    reply_unit = data.get("unit")
    expiry = data.get("expiry")
    return MintQuote(
        quote_id=quote_id,
        request=request,
        amount=reply_amount if type(reply_amount) is int else (amount or 0),
        unit=reply_unit if isinstance(reply_unit, str) else (unit or ""),
        state=_quote_state(data),
        expiry=expiry if type(expiry) is int else None,
    )


def _melt_quote(mint_url: str, data: Mapping[str, Any], unit: str | None, request: str | None) -> MeltQuote:
    quote_id, amount, fee_reserve = data.get("quote"), data.get("amount"), data.get("fee_reserve")
    if not isinstance(quote_id, str) or type(amount) is not int or type(fee_reserve) is not int:
        _malformed(mint_url, "melt_quote", "missing quote, amount or fee_reserve")
    reply_unit, reply_request = data.get("unit"), data.get("request")
    expiry, preimage = data.get("expiry"), data.get("payment_preimage")
    change = data.get("change")
    return MeltQuote(
        quote_id=quote_id,
        request=reply_request if isinstance(reply_request, str) else (request or ""),
        amount=amount,
        fee_reserve=fee_reserve,
        unit=reply_unit if isinstance(reply_unit, str) else (unit or ""),
        state=_quote_state(data),
        expiry=expiry if type(expiry) is int else None,
        payment_preimage=preimage if isinstance(preimage, str) else None,
        change=tuple(_signatures(change)) if change else (),
    )
