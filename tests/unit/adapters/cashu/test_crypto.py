"""BDHKE, DLEQ and keyset ids against the NUT-00, NUT-02 and NUT-12 test vectors."""

from typing import Any

import pytest
from coincurve import PrivateKey

from app.adapters.cashu import crypto
from tests.unit.adapters.cashu.vectors import keys_of, nut02_vectors, nut_vectors

V = nut_vectors()


@pytest.mark.parametrize("case", V["hash_to_curve"])
def test_hash_to_curve_matches_nut00_vector(case: dict[str, str]) -> None:
    result = crypto.hash_to_curve(bytes.fromhex(case["message"]))

    assert crypto.point_hex(result) == case["point"]


@pytest.mark.parametrize("case", V["blinded_messages"])
def test_blind_matches_nut00_vector(case: dict[str, str]) -> None:
    y = crypto.hash_to_curve(bytes.fromhex(case["x"]))

    b_ = crypto.blind(y, int(case["r"], 16))

    assert crypto.point_hex(b_) == case["B_"]


@pytest.mark.parametrize("case", V["blinded_signatures"])
def test_sign_blinded_matches_nut00_vector(case: dict[str, str]) -> None:
    c_ = crypto.sign_blinded(crypto.point(case["B_"]), int(case["k"], 16))

    assert crypto.point_hex(c_) == case["C_"]


def test_unblind_yields_the_mint_key_times_y() -> None:
    k, r, secret = 0x1234567, crypto.random_scalar(), "a secret"
    mint_key = PrivateKey(k.to_bytes(32, "big")).public_key
    c_ = crypto.sign_blinded(crypto.blind_message(secret, r), k)

    c = crypto.unblind(c_, r, mint_key)

    assert crypto.point_hex(c) == crypto.point_hex(crypto.sign_blinded(crypto.secret_y(secret), k))


def test_hash_e_matches_nut12_vector() -> None:
    case = V["hash_e"]
    points = [crypto.point(case[name]) for name in ("R1", "R2", "K", "C_")]

    assert crypto.hash_e(*points).hex() == case["hash"]


def test_verify_signature_dleq_accepts_nut12_vector() -> None:
    case = V["dleq_blind_signature"]

    assert crypto.verify_signature_dleq(mint_key=case["A"], b_=case["B_"], c_=case["C_"], e=case["e"], s=case["s"])


@pytest.mark.parametrize("field", ["e", "s", "C_", "B_"])
def test_verify_signature_dleq_rejects_nut12_vector_when_tampered(field: str) -> None:
    case: dict[str, Any] = dict(V["dleq_blind_signature"])
    if field in {"e", "s"}:
        case[field] = f"{int(case[field], 16) + 1:064x}"
    else:
        case[field] = crypto.point_hex(crypto.hash_to_curve(b"another point"))

    assert not crypto.verify_signature_dleq(mint_key=case["A"], b_=case["B_"], c_=case["C_"], e=case["e"], s=case["s"])


def test_verify_proof_dleq_accepts_nut12_vector() -> None:
    case = V["dleq_proof"]

    assert crypto.verify_proof_dleq(
        mint_key=case["A"], secret=case["secret"], c=case["C"], e=case["e"], s=case["s"], r=case["r"]
    )


@pytest.mark.parametrize(("field", "value"), [("secret", "another secret"), ("r", "01" * 32), ("s", "00" * 32)])
def test_verify_proof_dleq_rejects_nut12_vector_when_tampered(field: str, value: str) -> None:
    case: dict[str, Any] = {**V["dleq_proof"], field: value}

    assert not crypto.verify_proof_dleq(
        mint_key=case["A"], secret=case["secret"], c=case["C"], e=case["e"], s=case["s"], r=case["r"]
    )


def test_verify_signature_dleq_rejects_garbage_without_raising() -> None:
    assert not crypto.verify_signature_dleq(mint_key="zz", b_="02", c_="", e="x", s="y")


@pytest.mark.parametrize("case", nut02_vectors()["v1"])
def test_derive_keyset_id_v1_matches_nut02_vector(case: dict[str, str]) -> None:
    assert crypto.derive_keyset_id_v1(keys_of(case["keys"])) == case["id"]


@pytest.mark.parametrize("case", nut02_vectors()["v2"])
def test_derive_keyset_id_v2_matches_nut02_vector(case: dict[str, Any]) -> None:
    keyset_id = crypto.derive_keyset_id_v2(
        keys_of(case["keys"]), case["unit"], case["input_fee_ppk"], case["final_expiry"]
    )

    assert keyset_id == case["id"]


def test_keyset_id_matches_rejects_keys_of_another_keyset() -> None:
    case = nut02_vectors()["v2"][2]

    assert crypto.keyset_id_matches(case["id"], keys_of(case["keys"]), "sat", 0, None)
    assert not crypto.keyset_id_matches(case["id"], keys_of("keys_small"), "sat", 0, None)
    assert not crypto.keyset_id_matches(case["id"], keys_of(case["keys"]), "msat", 0, None)
