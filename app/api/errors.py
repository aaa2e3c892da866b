"""Maps domain and framework errors onto the OpenAI error envelope with the SPEC §15 statuses."""

from typing import Any, Final

import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException

from app.api.request_id import request_id_of
from app.domain import errors as e

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)

# error class -> (HTTP status, envelope `type`)
STATUS_BY_ERROR: Final[dict[type[e.DomainError], tuple[int, str]]] = {
    e.InvalidJsonError: (400, "invalid_request_error"),
    e.InvalidRequestError: (400, "invalid_request_error"),
    e.RequestTooLargeError: (413, "invalid_request_error"),
    e.NotFoundError: (404, "invalid_request_error"),
    e.ModelNotFoundError: (404, "invalid_request_error"),
    e.MissingApiKeyError: (401, "invalid_request_error"),
    e.InvalidApiKeyError: (401, "invalid_request_error"),
    e.KeyExpiredError: (403, "invalid_request_error"),
    e.PaymentRequiredError: (402, "insufficient_quota"),
    e.InsufficientBalanceError: (402, "insufficient_quota"),
    e.BalanceLimitExceededError: (402, "insufficient_quota"),
    e.NotParentKeyError: (403, "permission_error"),
    e.PriceUnavailableError: (503, "service_unavailable"),
    e.UpstreamError: (502, "upstream_error"),
    e.UpstreamTimeoutError: (504, "upstream_error"),
    e.UpstreamRateLimitedError: (429, "upstream_error"),
    e.RateLimitedError: (429, "rate_limit_error"),
    e.InvalidCashuTokenError: (400, "invalid_token"),
    e.UntrustedMintError: (400, "invalid_token"),
    e.UnsupportedUnitError: (400, "invalid_token"),
    e.MintMismatchError: (400, "invalid_token"),
    e.TokenAlreadySpentError: (400, "token_already_spent"),
    e.TokenZeroValueError: (400, "cashu_error"),
    e.SwapFeesExceedAmountError: (422, "mint_error"),
    e.TokenPendingError: (409, "token_pending"),
    e.MintUnreachableError: (503, "mint_unreachable"),
    e.RedemptionPendingError: (503, "mint_unreachable"),
    e.MintRateLimitedError: (503, "mint_rate_limited"),
    e.MintError: (502, "mint_error"),
    e.NoBalanceError: (400, "refund_error"),
    e.BalanceTooSmallError: (400, "refund_error"),
    e.ChildKeyRefundError: (400, "refund_error"),
    e.GrantNotRefundableError: (400, "refund_error"),
    e.RefundConflictError: (409, "refund_error"),
    e.RequestInProgressError: (425, "refund_error"),
    e.TokenNotFoundError: (404, "refund_error"),
    e.ChangeUnavailableError: (410, "refund_error"),
}

# Litestar's own status codes -> envelope code, so framework errors look like ours.
_FRAMEWORK_CODES: Final[dict[int, tuple[str, str]]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "invalid_request"),
    429: ("rate_limit_error", "rate_limited"),
}


def status_and_type(error: e.DomainError) -> tuple[int, str]:
    """The most specific mapping along the error's class hierarchy; unknown errors are 500s."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500, "api_error"


def error_body(
    message: str,
    error_type: str,
    code: str,
    request_id: str,
    details: object | None = None,
    *,
    refund_token: str | None = None,
) -> dict[str, object]:
    error: dict[str, object] = {"message": message, "type": error_type, "code": code}
    if details is not None:
        error["details"] = details
    if refund_token is not None:
        error["refund_token"] = refund_token
    return {"error": error, "request_id": request_id}


def _respond(
    request: Request[Any, Any, Any], status: int, body: dict[str, object], headers: dict[str, str]
) -> Response[dict[str, object]]:
    del request
    return Response(content=body, status_code=status, media_type=MediaType.JSON, headers=headers)


def domain_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, object]]:
    assert isinstance(exc, e.DomainError)  # noqa: S101 - registered for DomainError only
    status, error_type = status_and_type(exc)
    request_id = request_id_of(request.scope)
    headers: dict[str, str] = {}
    if isinstance(exc, e.RateLimitedError):
        headers["retry-after"] = str(exc.retry_after_seconds)
    if isinstance(exc, e.UpstreamRateLimitedError) and exc.retry_after:
        headers["retry-after"] = exc.retry_after
    retry_errors = e.RedemptionPendingError | e.MintRateLimitedError | e.RefundConflictError | e.RequestInProgressError
    if isinstance(exc, retry_errors) and exc.retry_after_seconds is not None:
        headers["retry-after"] = str(exc.retry_after_seconds)
    if status >= 500:  # noqa: PLR2004 - server-side failures are worth a log line
        log.warning("request_failed", code=exc.code, status=status)
    # NUT-24 creq on a 402, or the change of a failed X-Cashu request (SPEC §6.1, §6.2)
    x_cashu = exc.refund_token or exc.payment_request
    if x_cashu:
        headers["x-cashu"] = x_cashu
    if exc.change_pending is not None:
        headers["x-routstr-change-pending"] = str(exc.change_pending)
    details = dict(exc.details) if exc.details is not None else None
    body = error_body(exc.message, error_type, exc.code, request_id, details, refund_token=exc.refund_token)
    return _respond(request, status, body, headers)


def http_exception_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, object]]:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    status = exc.status_code
    error_type, code = _FRAMEWORK_CODES.get(status, ("api_error", "internal_error"))
    message = exc.detail or "request failed"
    if status == 400 and "JSON" in message:  # noqa: PLR2004
        code = "invalid_json"
    if status == 404:  # noqa: PLR2004
        message = "Not found"
    if status >= 500:  # noqa: PLR2004
        message = f"Internal error; quote request id {request_id_of(request.scope)} when reporting it"
    headers = dict(exc.headers or {})
    return _respond(request, status, error_body(message, error_type, code, request_id_of(request.scope)), headers)


def unexpected_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, object]]:
    request_id = request_id_of(request.scope)
    log.error("unhandled_error", error_type=type(exc).__name__)
    message = f"Internal error; quote request id {request_id} when reporting it"
    return _respond(request, 500, error_body(message, "api_error", "internal_error", request_id), {})


EXCEPTION_HANDLERS: Final = {
    e.DomainError: domain_error_handler,
    HTTPException: http_exception_handler,
    Exception: unexpected_error_handler,
}
