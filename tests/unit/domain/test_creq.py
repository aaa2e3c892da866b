"""NUT-24 payment demands: the creq amount rounding, its fields and the 402 details (SPEC §6.2)."""

import pytest

from app.adapters.cashu.codec import CashuTokenCodec
from app.domain.creq import demand_details, payment_request, request_amount
from app.domain.money import Msat

MINTS = ("http://primary.test", "http://second.test")


@pytest.mark.parametrize(
    ("required", "unit", "expected"),
    [(1, "sat", 1), (999, "sat", 1), (1000, "sat", 1), (1001, "sat", 2), (123_456, "sat", 124), (1001, "msat", 1001)],
)
def test_request_amount_rounds_sats_up_and_keeps_msat(required: int, unit: str, expected: int) -> None:
    assert request_amount(Msat(required), unit) == expected


def test_payment_request_carries_amount_unit_mints_single_use_and_model() -> None:
    request = payment_request(Msat(2500), "vendor/model-a", MINTS, "sat")

    assert (request.amount, request.unit, request.mints) == (3, "sat", MINTS)
    assert request.single_use is True
    assert request.description == "routstr vendor/model-a"
    assert not request.has_transports


def test_payment_request_round_trips_through_the_creq_codec() -> None:
    codec = CashuTokenCodec()

    encoded = codec.encode_payment_request(payment_request(Msat(1000), None, MINTS[:1], "msat"))

    assert encoded.startswith("creqA")
    decoded = codec.decode_payment_request(encoded)
    assert (decoded.amount, decoded.unit, decoded.mints, decoded.single_use) == (1000, "msat", MINTS[:1], True)
    assert decoded.description == "routstr"
    assert decoded.request_id is None


def test_demand_details_names_required_available_and_model() -> None:
    assert demand_details(Msat(5), Msat(2), "m") == {"required_msat": 5, "available_msat": 2, "model": "m"}
