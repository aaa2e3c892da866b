"""Tokens made by nutshell decode with our codec, their short ids resolve and their DLEQ proofs verify offline."""

from typing import Any

import pytest

from app.adapters.cashu import crypto
from app.adapters.cashu.codec import decode_token, encode_token
from app.domain.cashu import resolve_keyset_id
from tests.unit.adapters.cashu.vectors import nutshell_tokens

DATA = nutshell_tokens()
KEYSET = DATA["keyset"]
KEYS = {int(amount): key for amount, key in KEYSET["keys"].items()}


def test_nutshell_keyset_id_derives_from_its_keys() -> None:
    assert crypto.keyset_id_matches(KEYSET["id"], KEYS, KEYSET["unit"], KEYSET["input_fee_ppk"], KEYSET["final_expiry"])


@pytest.mark.parametrize("case", DATA["tokens"], ids=lambda c: c["serialized"][:6])
def test_nutshell_token_decodes_with_its_amount_and_mint(case: dict[str, Any]) -> None:
    token = decode_token(case["serialized"])

    assert (token.mint, token.unit, token.amount) == (DATA["mint_url"], "sat", case["amount"])
    assert {resolve_keyset_id(p.keyset_id, [KEYSET["id"]]) for p in token.proofs} == {KEYSET["id"]}


@pytest.mark.parametrize("case", [c for c in DATA["tokens"] if c["dleq"]], ids=lambda c: c["serialized"][:6])
def test_nutshell_token_dleq_proofs_verify(case: dict[str, Any]) -> None:
    token = decode_token(case["serialized"])

    for proof in token.proofs:
        assert proof.dleq is not None
        assert proof.dleq.r is not None
        assert crypto.verify_proof_dleq(
            mint_key=KEYS[proof.amount], secret=proof.secret, c=proof.c, e=proof.dleq.e, s=proof.dleq.s, r=proof.dleq.r
        )


def test_nutshell_token_dleq_fails_against_another_amounts_key() -> None:
    proof = decode_token(DATA["tokens"][0]["serialized"]).proofs[0]
    other = next(key for amount, key in KEYS.items() if amount != proof.amount)

    assert proof.dleq is not None
    assert proof.dleq.r is not None
    assert not crypto.verify_proof_dleq(
        mint_key=other, secret=proof.secret, c=proof.c, e=proof.dleq.e, s=proof.dleq.s, r=proof.dleq.r
    )


@pytest.mark.parametrize("case", DATA["tokens"], ids=lambda c: c["serialized"][:6])
def test_nutshell_token_survives_our_cashu_b_round_trip(case: dict[str, Any]) -> None:
    token = decode_token(case["serialized"])

    again = decode_token(encode_token(token))

    assert again.token_hash == token.token_hash
    assert [(p.amount, p.c, p.dleq) for p in again.proofs] == [(p.amount, p.c, p.dleq) for p in token.proofs]
