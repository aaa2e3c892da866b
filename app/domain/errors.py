"""Domain errors. Each carries the stable machine code of the SPEC §15 catalogue; the API maps classes to statuses."""

from collections.abc import Mapping
from typing import ClassVar


class DomainError(Exception):
    """Base of every rule violation the node reports to a client."""

    code: ClassVar[str] = "internal_error"

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
