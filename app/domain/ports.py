"""Ports: the capabilities the domain needs from the outside world, as Protocols with domain types only."""

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from app.domain.accounts import (
    ApiKey,
    LedgerEntry,
    NewApiKey,
    NewChildKey,
    Reservation,
    ReservationRequest,
    Settlement,
)
from app.domain.cashu import (
    Keyset,
    MeltQuote,
    MeltResult,
    MintInfo,
    MintQuote,
    PaymentRequest,
    PendingOutput,
    Proof,
    ProofState,
    Token,
)
from app.domain.money import Msat
from app.domain.nostr import Event, EventQuery, QueryResult
from app.domain.upstream import UpstreamRequest
from app.domain.wallet import (
    NewRedemption,
    Redemption,
    RedemptionCredit,
    RedemptionState,
    RefundRecord,
    SendRequest,
)


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class Ledger(Protocol):
    """Accounts and their money moves. Every method is one atomic unit that journals what it moves.

    No process-local lock is needed: each move is a conditional write, safe across instances sharing a database.
    """

    async def create_key(self, key: NewApiKey) -> ApiKey:
        """Insert a key and journal its `grant` (idempotency key `grant:<key_hash>`) in one transaction.

        Creating an existing key hash returns the stored key without a second grant.
        """
        ...

    async def get_key(self, key_hash: str) -> ApiKey | None:
        """The key, or None when unknown."""
        ...

    async def list_keys(self, *, limit: int = 100, offset: int = 0) -> Sequence[ApiKey]:
        """Keys, oldest first."""
        ...

    async def create_child_keys(
        self, parent_key_hash: str, children: Sequence[NewChildKey], fee_per_key: Msat, now: datetime
    ) -> Sequence[ApiKey]:
        """Create children of a parent key and debit `fee_per_key * len(children)` (CHILD_KEY_COST) from its
        available balance, journaled as `child_key_fee` (idempotency key `child_key_fee:<first child hash>`), in one
        transaction. Raises InvalidApiKeyError for an unknown parent, NotParentKeyError when it is itself a child,
        KeyExpiredError when it expired at `now`, InsufficientBalanceError (details: required_msat, available_msat)
        when its available balance is short. Nothing is written when it raises.
        """
        ...

    async def reserve(self, request: ReservationRequest) -> Reservation:
        """Hold `request.amount` on the billing key and insert an `active` reservation, atomically.

        Raises InvalidApiKeyError for an unknown key, KeyExpiredError when the key expired at `request.now`,
        InsufficientBalanceError (details: required_msat, available_msat) when available < amount, and
        BalanceLimitExceededError when a child or limited key's limit would be passed. Reserving an existing
        request id returns the stored reservation unchanged.
        """
        ...

    async def resize(self, request_id: str, amount: Msat, now: datetime) -> Reservation:
        """Grow an active hold to `amount` (failover to a dearer candidate, SPEC §5), atomically: CAS on the status and
        the old amount, `reserved += Δ` guarded by the billing key's available balance and expiry, `limit_used += Δ`
        guarded by the limit of a child or limited key. An `amount` not above the hold leaves it unchanged.

        Raises ReservationNotFoundError for an unknown id, ReservationStateError when it is not active (or changed
        concurrently), KeyExpiredError, InsufficientBalanceError (details: required_msat = Δ, available_msat) and
        BalanceLimitExceededError; the hold is unchanged when it raises. Returns the reservation as stored after.
        """
        ...

    async def settle(self, request_id: str, charge: Msat, now: datetime) -> Settlement:
        """Charge a reservation exactly once: CAS `active|expired -> charged`, collect
        `min(charge, R + balance - reserved)` for an active hold (`min(charge, available)` for an expired one),
        free the hold, journal `charge:<request_id>` and, if short, `shortfall:<request_id>`.

        Idempotent: settling again returns the first settlement. Raises ReservationNotFoundError for an unknown id
        and ReservationStateError (a ValueError) when the reservation was already released.
        """
        ...

    async def release(self, request_id: str, now: datetime) -> bool:
        """Free a hold without charging: CAS `active -> released`. Returns False when it was not active."""
        ...

    async def renew_leases(self, request_ids: Sequence[str], lease_expires_at: datetime) -> int:
        """Extend the leases of these still-active reservations (one statement). Returns how many were renewed."""
        ...

    async def sweep_expired(self, now: datetime) -> int:
        """Move active reservations whose lease passed to `expired` and free their holds. Returns the count."""
        ...

    async def reset_due_limits(self, now: datetime) -> int:
        """The limit-reset job: zero `limit_used` of every key whose reset boundary passed at `now` and move the
        boundary to the next one (UTC day, Monday or 1st of the month). Idempotent. Returns how many were reset.
        `reserve` applies a due reset too, so this only keeps what the key shows current."""
        ...

    async def get_reservation(self, request_id: str) -> Reservation | None:
        """The reservation, or None."""
        ...

    async def entries_for_key(self, key_hash: str) -> Sequence[LedgerEntry]:
        """The key's journal, oldest first."""
        ...


class LedgerAudit(Protocol):
    async def violations(self) -> Sequence[str]:
        """Human-readable descriptions of every broken SPEC §5 invariant; empty when all hold."""
        ...


class JobLeases(Protocol):
    """Which instance runs a leased job (SPEC §3): a row per job name, taken by a conditional upsert.

    Each call is one atomic statement, so instances sharing the database need no other lock: of any number of
    concurrent `acquire` calls by different holders on a free or expired lease exactly one gets it, and nobody else
    gets a live lease. Expiry is judged by the caller's `now`, so instance clocks must agree to within the margin the
    caller leaves between renewals and `expires_at`.
    """

    async def acquire(self, name: str, holder: str, now: datetime, expires_at: datetime) -> bool:
        """Take or renew job `name` for `holder` until `expires_at`, in one conditional write that succeeds only
        when no lease exists, the current one expired at `now`, or it is already `holder`'s. True when held."""
        ...

    async def release(self, name: str, holder: str) -> bool:
        """Give the lease up early; False when `holder` did not hold it."""
        ...


class StorageHealth(Protocol):
    async def check(self) -> str | None:
        """None when the database is reachable and migrated to head; otherwise what is wrong, without secrets."""
        ...


class UpstreamResponse(Protocol):
    """An upstream reply whose status and headers have arrived; the body is read lazily, once."""

    @property
    def status(self) -> int: ...

    @property
    def content_type(self) -> str | None: ...

    @property
    def retry_after(self) -> str | None:
        """The upstream's `Retry-After`, verbatim, or None."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive. Raises UpstreamTimeoutError after the idle-read timeout and UpstreamError
        when the connection breaks."""
        ...

    async def read(self) -> bytes:
        """The whole body (non-streamed replies). Raises like `chunks`."""
        ...

    async def aclose(self) -> None:
        """Release the connection; safe to call more than once."""
        ...


class Upstream(Protocol):
    """One configured provider reached over HTTP, with its pooled client."""

    @property
    def provider_id(self) -> str: ...

    @property
    def trusts_reported_cost(self) -> bool:
        """Whether the USD cost this provider reports in `usage.cost` may be billed (openrouter only, SPEC §4.5)."""
        ...

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """POST the request; returns once the status line and headers arrived (any status).

        Raises UpstreamTimeoutError when the upstream is silent past the idle timeout and UpstreamError on a
        connect or transport failure. Never retries.
        """
        ...

    async def fetch_models(self) -> Sequence[Mapping[str, object]]:
        """The upstream's `GET {base}/models` `data` list, as parsed JSON. Raises UpstreamError."""
        ...


class TokenCodec(Protocol):
    """Cashu text formats (NUT-00 tokens, NUT-18 payment requests). Pure and offline: never contacts a mint."""

    def decode_token(self, raw: str) -> Token:
        """Parse `cashuA…` (JSON) or `cashuB…` (CBOR), padded or not, with or without a `cashu:` prefix.

        Raises InvalidCashuTokenError for anything undecodable or empty, more than 100 KiB or 500 proofs, several
        mints in one `cashuA`, NUT-10 locked secrets, duplicate secrets, non-positive amounts or invalid points.
        Keyset ids are returned as carried (v2 ids may be short); `Mint` resolves them.
        """
        ...

    def encode_token(self, token: Token) -> str:
        """Serialize as `cashuB` (CBOR, unpadded base64url), the only format the node emits."""
        ...

    def encode_payment_request(self, request: PaymentRequest) -> str:
        """Serialize as `creqA` + padded base64url(CBOR)."""
        ...

    def decode_payment_request(self, raw: str) -> PaymentRequest:
        """Parse a `creqA…` request (padded or not). Raises InvalidRequestError when it is not one."""
        ...


class Mint(Protocol):
    """The Cashu mints the node talks to, each named by its normalized URL.

    Amounts are integers in the keyset's unit. Calls to one mint are bounded per instance (MINT_MAX_CONCURRENCY)
    and retried on transport failures and 429 (MINT_RETRY_MAX_ATTEMPTS) only where a retry cannot apply an
    operation twice. Every method may raise:
      - MintUnreachableError: transport failure (connect error, timeout, reset) on every attempt;
      - MintOutcomeUnknownError (a MintUnreachableError): a state-changing call may have been applied by the mint;
        reconcile with `check_state` and `restore` before concluding anything;
      - MintRateLimitedError: the mint answered 429 on every attempt;
      - MintError: any other refusal or a malformed reply (bad JSON, a bad signature or DLEQ).
    """

    async def info(self, mint_url: str) -> MintInfo:
        """`GET /v1/info`."""
        ...

    async def keysets(self, mint_url: str) -> Sequence[Keyset]:
        """Every keyset of the mint with its keys. Cached per instance; refetched when an unknown id is met."""
        ...

    async def input_fee(self, mint_url: str, proofs: Sequence[Proof]) -> int:
        """What the mint keeps for spending `proofs`: `ceil(sum of input_fee_ppk / 1000)`.

        Raises InvalidCashuTokenError when a proof names a keyset the mint does not have (short ids are expanded).
        """
        ...

    def proof_ys(self, proofs: Sequence[Proof]) -> list[str]:
        """`Y = hash_to_curve(secret)` of each proof (hex), the key NUT-07 checkstate uses. Pure, offline."""
        ...

    async def prepare_outputs(self, mint_url: str, unit: str, amount: int) -> Sequence[PendingOutput]:
        """Fresh random blinded outputs worth exactly `amount` on the mint's active keyset for `unit`.

        Changes nothing at the mint. Persist them before the call that signs them. Raises UnsupportedUnitError
        when the mint has no active keyset in `unit`. `amount` 0 gives no outputs.
        """
        ...

    async def blank_outputs(self, mint_url: str, unit: str, fee_reserve: int) -> Sequence[PendingOutput]:
        """NUT-08 blank outputs able to carry back up to `fee_reserve` units of melt change."""
        ...

    async def swap(self, mint_url: str, inputs: Sequence[Proof], outputs: Sequence[PendingOutput]) -> Sequence[Proof]:
        """NUT-03: spend `inputs` for signatures on `outputs`; return the unblinded proofs in output order.

        The outputs must add up to `sum(inputs) - input_fee`. DLEQ proofs on the inputs and on the returned
        signatures are verified when present. Raises TokenAlreadySpentError (code 11001), TokenPendingError
        (11002), InvalidCashuTokenError (unknown keyset, bad input DLEQ). Not idempotent: after
        MintOutcomeUnknownError use `check_state` on the inputs and `restore` on the outputs.
        """
        ...

    async def check_state(self, mint_url: str, ys: Sequence[str]) -> Sequence[ProofState]:
        """NUT-07 state of each `Y`, in request order. Read-only, so always retried."""
        ...

    async def restore(self, mint_url: str, outputs: Sequence[PendingOutput]) -> Sequence[Proof]:
        """NUT-09: the proofs for those `outputs` the mint has already signed (possibly none), unblinded."""
        ...

    async def create_mint_quote(self, mint_url: str, unit: str, amount: int) -> MintQuote:
        """NUT-04: a bolt11 invoice to pay for minting `amount` units."""
        ...

    async def get_mint_quote(self, mint_url: str, quote_id: str) -> MintQuote:
        """NUT-04 quote state (`UNPAID`, `PAID`, `ISSUED`)."""
        ...

    async def mint(self, mint_url: str, quote_id: str, outputs: Sequence[PendingOutput]) -> Sequence[Proof]:
        """NUT-04: sign `outputs` for a paid quote; return the unblinded proofs in output order."""
        ...

    async def create_melt_quote(self, mint_url: str, unit: str, request: str) -> MeltQuote:
        """NUT-05: what paying the bolt11 `request` costs (`amount` + up to `fee_reserve`)."""
        ...

    async def get_melt_quote(
        self, mint_url: str, quote_id: str, blank_outputs: Sequence[PendingOutput] = ()
    ) -> MeltResult:
        """NUT-05 quote state; change signatures are unblinded with `blank_outputs` when given."""
        ...

    async def melt(
        self, mint_url: str, quote_id: str, inputs: Sequence[Proof], blank_outputs: Sequence[PendingOutput] = ()
    ) -> MeltResult:
        """NUT-05: pay the quote with `inputs`; unused fee reserve comes back as change on `blank_outputs`.

        Raises TokenAlreadySpentError, TokenPendingError like `swap`. A timeout is MintOutcomeUnknownError: poll
        `get_melt_quote`.
        """
        ...


class Redemptions(Protocol):
    """The idempotent claim and credit of received tokens (SPEC §7.2). No process-local locks: every step is a
    conditional write, safe across instances sharing the database."""

    async def claim(self, claim: NewRedemption) -> tuple[Redemption, bool]:
        """`INSERT redemptions(pending)` ignoring a conflict; the stored row and whether this call inserted it."""
        ...

    async def get(self, token_hash: str) -> Redemption | None:
        """The redemption, or None."""
        ...

    async def restart(self, token_hash: str, expected: Redemption, key_hash: str, fee: int, now: datetime) -> bool:
        """CAS the row from exactly `expected` (its state and `attempt_started_at`) back to `pending` for `key_hash`
        with a new attempt starting at `now` and input fee `fee`. False when another caller changed it first."""
        ...

    async def persist_outputs(
        self, token_hash: str, mint_url: str, unit: str, outputs: Sequence[PendingOutput], now: datetime
    ) -> None:
        """Store `outputs` as `issuing` proofs with `op_id=redeem:<token_hash>` before the swap that signs them.

        Earlier issuing outputs of the same redemption are detached first (their op_id gets a `stale:` prefix), so
        exactly these remain the redemption's outputs. Rows are never deleted.
        """
        ...

    async def outputs(self, token_hash: str) -> Sequence[PendingOutput]:
        """The redemption's `issuing` outputs, in the order they were persisted."""
        ...

    async def credit(self, credit: RedemptionCredit, proofs: Sequence[Proof]) -> ApiKey:
        """The one credit transaction: CAS `pending -> credited` (with `credited_msat`), mark the outputs signed as
        `proofs` `unspent` (storing `C` and DLEQ), create the key (with the redemption's mint and unit and
        `credit.terms`) or add to its balance, and journal `deposit` with idempotency key `redeem:<token_hash>`.

        With `credit.attempt_started_at` the CAS also requires that attempt (a restarted row belongs to the new
        attempt). Signed outputs are found by secret among the redemption's outputs, including ones a later attempt
        detached (`stale:` op_id), so signatures a mint returned are never lost.

        Returns the key afterwards. Raises RedemptionPendingError when the row was no longer `pending` (or no
        longer this attempt's).
        """
        ...

    async def finish(
        self,
        token_hash: str,
        state: RedemptionState,
        error_code: str | None,
        now: datetime,
        *,
        attempt_started_at: datetime | None = None,
    ) -> bool:
        """CAS `pending -> failed|aborted` with `error_code` (and, when given, only for that attempt); False when the
        row was not pending or belongs to another attempt."""
        ...

    async def stale(self, started_before: datetime, limit: int = 100) -> Sequence[Redemption]:
        """`pending` redemptions whose attempt started before `started_before`, oldest first (the reconciler)."""
        ...


class Wallet(Protocol):
    """The node's proofs at each mint (`cashu_proofs`) and the sends (refunds, change) that spend them.

    Proofs move `issuing -> unspent -> reserved -> spent|sent` and are never deleted.
    """

    async def reserve_send(self, request: SendRequest) -> tuple[RefundRecord, Sequence[Proof]]:
        """One transaction: debit `request.debit` from the key as a CAS on its balance (`expected_balance`) and on
        `reserved = 0`; pick unspent proofs of the mint and unit worth at least `request.amount`
        (`FOR UPDATE SKIP LOCKED`, so two instances never pick the same proof) and mark them `reserved` with
        `op_id=refund:<id>`; insert the `pending` refunds row; journal `refund` (-amount in msat) and, when not
        zero, `rounding`. Returns the row and the reserved inputs.

        Raises RefundConflictError when the CAS fails (holds appeared or the balance moved) and WalletShortError
        when the proofs do not cover the amount (nothing is written then).
        """
        ...

    async def persist_outputs(
        self, refund_id: str, mint_url: str, unit: str, outputs: Sequence[PendingOutput], now: datetime
    ) -> None:
        """Store `outputs` as `issuing` proofs with `op_id=refund:<id>` before the swap that signs them."""
        ...

    async def outputs(self, refund_id: str) -> Sequence[PendingOutput]:
        """The send's `issuing` outputs, in the order they were persisted."""
        ...

    async def complete_send(
        self, refund_id: str, sent: Sequence[Proof], change: Sequence[Proof], fee: int, now: datetime
    ) -> RefundRecord:
        """One transaction: the reserved inputs become `spent` (or `sent` when they are sent as they are), signed
        outputs become `sent` (`sent`) or `unspent` (`change`), and the row becomes `issued` with `fee`.
        Idempotent: completing an issued send returns it unchanged. A send already `failed` (its debit given back,
        e.g. by the reconciler) stays `failed` and is returned so: if a swap of its inputs landed after all, the
        inputs become `spent` and all signed outputs `unspent` node proofs; nothing may be handed out then."""
        ...

    async def cancel_send(self, refund_id: str, now: datetime, *, inputs_spent: bool = False) -> bool:
        """A definite failure: the reserved inputs go back to `unspent` (or become `spent` with `inputs_spent`, when
        the mint reported them spent), the row becomes `failed`, and the whole debit is given back as
        `refund_reversal` (idempotency key `refund_reversal:<id>`). False when the row was not pending/ambiguous."""
        ...

    async def send_inputs(self, refund_id: str) -> Sequence[Proof]:
        """The send's inputs still `reserved` under `op_id=refund:<id>` (what the reconciler checks at the mint)."""
        ...

    async def unsettled(self, updated_before: datetime, limit: int = 100) -> Sequence[RefundRecord]:
        """Token sends still `pending` or `ambiguous` and last updated before `updated_before`, oldest first."""
        ...

    async def has_unsettled(self, key_hash: str) -> bool:
        """Whether the key has a token send that is still `pending` or `ambiguous`."""
        ...

    async def mark_ambiguous(self, refund_id: str, now: datetime) -> None:
        """The outcome is unknown: the row becomes `ambiguous` and keeps its inputs reserved for the reconciler."""
        ...

    async def latest_refund(self, key_hash: str, now: datetime) -> tuple[RefundRecord, Sequence[Proof]] | None:
        """The key's newest issued token refund and its `sent` proofs (to rebuild the token); sets `collected_at`.
        None when the key has none."""
        ...

    async def balance(self, mint_url: str, unit: str) -> int:
        """The value of `unspent` + `reserved` proofs at the mint, in `unit`."""
        ...


class Relay(Protocol):
    """One Nostr relay. Each call opens its own connection; `wss://` relays use verified TLS."""

    @property
    def url(self) -> str: ...

    async def publish(self, event: Event) -> None:
        """Send `event` and wait up to 10 s for `["OK", id, true]`.

        Raises RelayRejectedError when the relay answers false, RelayUnavailableError when it cannot be reached,
        drops the connection or does not answer in time. Publishing the same event again is harmless.
        """
        ...

    async def query(self, query: EventQuery) -> QueryResult:
        """Stored events matching `query`, read until EOSE or 5 s, whichever comes first (what arrived is kept).

        Events are parsed but not verified. Malformed or oversized ones are counted in `malformed`, never raised.
        Raises RelayUnavailableError when no connection can be made.
        """
        ...


class EventSigner(Protocol):
    """The node's Nostr key (BIP-340 over secp256k1). The secret never leaves the implementation."""

    @property
    def public_key(self) -> str:
        """The x-only public key, 64 lowercase hex characters."""
        ...

    def sign(self, event_id: str) -> str:
        """The BIP-340 signature (128 hex characters) of the 32-byte event id given as hex."""
        ...


class SignatureVerifier(Protocol):
    def verify(self, public_key: str, event_id: str, signature: str) -> bool:
        """True when `signature` is a valid BIP-340 signature of `event_id` by `public_key` (all hex).

        Never raises: malformed keys or signatures are simply not valid.
        """
        ...


class PriceSource(Protocol):
    """One exchange's BTC/USD quote (SPEC §4.3), over the container's HTTP client with a 5 s timeout."""

    @property
    def name(self) -> str:
        """The stable source name: `kraken`, `coinbase` or `binance`."""
        ...

    async def btc_usd_micro(self) -> int:
        """The latest BTC price in micro-USD per BTC (rounded down). Read-only, so safe to retry.

        Raises PriceUnavailableError on a transport failure or timeout, a non-200 status, or a reply that does
        not parse to a positive price. Plausibility (1e3..1e7 USD) is the caller's rule.
        """
        ...
