"""NUT-24 payment demands of the node's 402s (SPEC §6.2): the NUT-18 request a client pays and the error details."""

from collections.abc import Sequence

from app.domain.cashu import PaymentRequest
from app.domain.money import MSAT_PER_SAT, Msat, ceil_div

DESCRIPTION_PREFIX = "routstr"


def request_amount(required: Msat, unit: str) -> int:
    """`a` of the creq: `ceil(R/1000)` for `sat` (never less than R), `R` itself for `msat`."""
    if unit == "msat":
        return required.value
    return ceil_div(required.value, MSAT_PER_SAT)


def payment_request(required: Msat, model: str | None, mints: Sequence[str], unit: str) -> PaymentRequest:
    """`{"a","u","m":[trusted mints, primary first],"s":true,"d":"routstr <model>"}`; no `t`: paid in-band."""
    description = f"{DESCRIPTION_PREFIX} {model}" if model else DESCRIPTION_PREFIX
    return PaymentRequest(
        amount=request_amount(required, unit),
        unit=unit,
        mints=tuple(mints),
        single_use=True,
        description=description,
    )


def demand_details(required: Msat, available: Msat, model: str | None) -> dict[str, object]:
    """`error.details` of every 402: what the request needs, what the credential holds, and the model."""
    return {"required_msat": required.value, "available_msat": available.value, "model": model}
