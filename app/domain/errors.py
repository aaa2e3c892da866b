"""Domain errors. Each carries the stable machine code of the SPEC §15 catalogue; the API maps classes to statuses."""

from collections.abc import Mapping
from typing import ClassVar


class DomainError(Exception):
    """Base of every rule violation the node reports to a client."""

    code: ClassVar[str] = "internal_error"
    # Set by the X-Cashu payment layer (SPEC §6.1, §6.2); the API turns them into headers and envelope fields.
    payment_request: str | None = None  # the NUT-24 `creqA…` of a 402: `X-Cashu` response header
    refund_token: str | None = None  # change of a failed X-Cashu request: `X-Cashu` header and `error.refund_token`
    change_pending: int | None = None  # change owed but not issued (in the token's unit): `x-routstr-change-pending`

    def __init__(self, message: str, *, details: Mapping[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: Mapping[str, object] | None = details


# -- request shape ---------------------------------------------------------------------------------------------------
class InvalidJsonError(DomainError):
    code = "invalid_json"


class InvalidRequestError(DomainError):
    code = "invalid_request"


class RequestTooLargeError(DomainError):
    code = "request_too_large"


class NotFoundError(DomainError):
    code = "not_found"


class ModelNotFoundError(DomainError):
    code = "model_not_found"


# -- credentials -----------------------------------------------------------------------------------------------------
class MissingApiKeyError(DomainError):
    code = "missing_api_key"


class InvalidApiKeyError(DomainError):
    code = "invalid_api_key"


class KeyExpiredError(DomainError):
    code = "key_expired"


# -- balance ---------------------------------------------------------------------------------------------------------
class PaymentRequiredError(DomainError):
    code = "payment_required"


class InsufficientBalanceError(DomainError):
    code = "insufficient_balance"


class BalanceLimitExceededError(DomainError):
    code = "balance_limit_exceeded"


class NotParentKeyError(DomainError):
    """A child-key operation on a key that may not do it (children cannot have children)."""

    code = "not_parent_key"


class ReservationNotFoundError(DomainError):
    code = "internal_error"


class ReservationStateError(DomainError, ValueError):
    """A reservation move the state machine forbids, e.g. charging a released hold (also a ValueError)."""

    code = "internal_error"


# -- pricing and upstreams -------------------------------------------------------------------------------------------
class PriceUnavailableError(DomainError):
    code = "price_unavailable"


class UpstreamError(DomainError):
    code = "upstream_error"


class UpstreamTimeoutError(DomainError):
    code = "upstream_timeout"


class UpstreamRateLimitedError(DomainError):
    code = "UPSTREAM_RATE_LIMIT"

    def __init__(
        self, message: str, *, retry_after: str | None = None, details: Mapping[str, object] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class RateLimitedError(DomainError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_seconds: int, details: Mapping[str, object] | None = None) -> None:
        super().__init__(message, details=details)
        self.retry_after_seconds = retry_after_seconds


# -- persistence -----------------------------------------------------------------------------------------------------
class StorageUnavailableError(DomainError):
    code = "internal_error"


# -- cashu -----------------------------------------------------------------------------------------------------------
class InvalidCashuTokenError(DomainError):
    """Undecodable, empty, oversized, multi-mint, locked, duplicate or non-positive proofs; bad DLEQ; unknown keyset."""

    code = "invalid_cashu_token"


class UntrustedMintError(DomainError):
    code = "untrusted_mint"


class UnsupportedUnitError(DomainError):
    code = "unsupported_unit"


class MintMismatchError(DomainError):
    code = "mint_mismatch"


class TokenAlreadySpentError(DomainError):
    """The mint reports the inputs spent (NUT code 11001), or the token was credited to another key."""

    code = "cashu_token_already_spent"


class TokenPendingError(DomainError):
    """The mint reports the inputs pending (NUT code 11002)."""

    code = "cashu_token_pending"


class TokenZeroValueError(DomainError):
    code = "cashu_token_zero_value"


class SwapFeesExceedAmountError(DomainError):
    code = "cashu_token_swap_fees_exceed_amount"


class MintUnreachableError(DomainError):
    """Transport failure talking to a mint (connect error, timeout, reset) after the allowed retries."""

    code = "cashu_mint_unreachable"


class MintOutcomeUnknownError(MintUnreachableError):
    """A state-changing call (swap, mint, melt) may have reached the mint but no answer came back.

    The inputs may or may not be spent: reconcile with checkstate (NUT-07) and restore (NUT-09) before deciding.
    """


class RedemptionPendingError(DomainError):
    """Another request is redeeming the same token right now."""

    code = "cashu_redemption_pending"

    def __init__(
        self, message: str, *, retry_after_seconds: int = 2, details: Mapping[str, object] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after_seconds = retry_after_seconds


class MintRateLimitedError(DomainError):
    """The mint answered 429 on every allowed attempt."""

    code = "cashu_mint_rate_limited"

    def __init__(
        self, message: str, *, retry_after_seconds: int | None = None, details: Mapping[str, object] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after_seconds = retry_after_seconds


class MintError(DomainError):
    """An unexpected or malformed reply from a mint (any other error code, a bad signature or DLEQ, bad JSON)."""

    code = "mint_error"


# -- refunds (SPEC §9.1) ---------------------------------------------------------------------------------------------
class RefundError(DomainError):
    """Base of the `refund_error` family."""

    code = "refund_error"


class NoBalanceError(RefundError):
    code = "no_balance"


class BalanceTooSmallError(RefundError):
    code = "balance_too_small"


class ChildKeyRefundError(RefundError):
    code = "child_key_refund"


class GrantNotRefundableError(RefundError):
    code = "grant_not_refundable"


class RefundConflictError(RefundError):
    """Requests are in flight on the key, or its balance changed while the refund was prepared."""

    code = "refund_conflict"

    def __init__(
        self, message: str, *, retry_after_seconds: int = 2, details: Mapping[str, object] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after_seconds = retry_after_seconds


class RequestInProgressError(RefundError):
    code = "request_in_progress"

    def __init__(
        self, message: str, *, retry_after_seconds: int = 2, details: Mapping[str, object] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after_seconds = retry_after_seconds


class TokenNotFoundError(RefundError):
    code = "token_not_found"


class ChangeUnavailableError(RefundError):
    code = "change_unavailable"


class WalletShortError(DomainError):
    """The node's wallet holds too few proofs at a mint to send what a key is owed (invariant 3 is broken)."""

    code = "internal_error"


# -- nostr -----------------------------------------------------------------------------------------------------------
class MalformedEventError(DomainError):
    """A Nostr event from a relay that does not parse or exceeds the size limits; it is dropped and counted."""

    code = "malformed_event"


class RelayError(DomainError):
    """A relay could not be used; never reaches a client (publishing and discovery run in the background)."""

    code = "relay_error"


class RelayUnavailableError(RelayError):
    """The relay could not be reached, dropped the connection or did not answer in time."""


class RelayRejectedError(RelayError):
    """The relay answered `["OK", id, false, reason]`."""
