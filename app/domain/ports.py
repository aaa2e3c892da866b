"""Ports: the capabilities the domain needs from the outside world, as Protocols with domain types only."""

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from app.domain.accounts import ApiKey, LedgerEntry, NewApiKey, Reservation, ReservationRequest, Settlement
from app.domain.money import Msat
from app.domain.upstream import UpstreamRequest


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

    async def reserve(self, request: ReservationRequest) -> Reservation:
        """Hold `request.amount` on the billing key and insert an `active` reservation, atomically.

        Raises InvalidApiKeyError for an unknown key, KeyExpiredError when the key expired at `request.now`,
        InsufficientBalanceError (details: required_msat, available_msat) when available < amount, and
        BalanceLimitExceededError when a child or limited key's limit would be passed. Reserving an existing
        request id returns the stored reservation unchanged.
        """
        ...

    async def settle(self, request_id: str, charge: Msat, now: datetime) -> Settlement:
        """Charge a reservation exactly once: CAS `active|expired -> charged`, collect
        `min(charge, R + balance - reserved)` for an active hold (`min(charge, available)` for an expired one),
        free the hold, journal `charge:<request_id>` and, if short, `shortfall:<request_id>`.

        Idempotent: settling again returns the first settlement. Raises ReservationNotFoundError for an unknown id
        and ValueError when the reservation was already released.
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
