"""Cashu rules: input fees, amount splits, short keyset ids, NUT-10 secrets and the token hash."""

import hashlib

import pytest

from app.domain.cashu import Proof, Token, input_fee, is_locked_secret, proofs_hash, resolve_keyset_id, split_amount

FULL_A = "01aaaaaaaaaaaaaa" + "11" * 25
FULL_B = "01aaaaaaaaaaaaab" + "22" * 25
FULL_C = "01bbbbbbbbbbbbbb" + "33" * 25


def _proof(amount: int, keyset_id: str, text: str = "s") -> Proof:
    return Proof(amount, keyset_id, text, "02" + "00" * 32)


@pytest.mark.parametrize(
    ("ppk", "count", "fee"),
    [(0, 5, 0), (100, 1, 1), (100, 10, 1), (100, 11, 2), (1000, 3, 3), (1, 1, 1), (999, 1, 1), (250, 4, 1)],
)
def test_input_fee_is_ceil_of_summed_ppk_over_1000(ppk: int, count: int, fee: int) -> None:
    proofs = [_proof(1, FULL_A, str(i)) for i in range(count)]

    assert input_fee(proofs, {FULL_A: ppk}) == fee


def test_input_fee_sums_across_keysets_before_rounding() -> None:
    proofs = [_proof(1, FULL_A, "a"), _proof(1, FULL_B, "b")]

    assert input_fee(proofs, {FULL_A: 400, FULL_B: 500}) == 1


def test_input_fee_raises_for_unknown_keyset() -> None:
    with pytest.raises(KeyError):
        input_fee([_proof(1, FULL_C)], {FULL_A: 0})


@pytest.mark.parametrize(
    ("amount", "parts"), [(0, []), (1, [1]), (13, [1, 4, 8]), (64, [64]), (1023, [1 << i for i in range(10)])]
)
def test_split_amount_gives_ascending_powers_of_two(amount: int, parts: list[int]) -> None:
    assert split_amount(amount) == parts
    assert sum(split_amount(amount)) == amount


def test_split_amount_raises_when_keyset_lacks_a_denomination() -> None:
    with pytest.raises(ValueError, match="no key"):
        split_amount(5, [1, 2])


def test_split_amount_raises_for_negative_amounts() -> None:
    with pytest.raises(ValueError, match="negative"):
        split_amount(-1)


def test_resolve_keyset_id_prefers_exact_match() -> None:
    assert resolve_keyset_id(FULL_A, [FULL_B, FULL_A]) == FULL_A


def test_resolve_keyset_id_expands_unique_short_v2_prefix() -> None:
    assert resolve_keyset_id(FULL_C[:16], [FULL_A, FULL_C]) == FULL_C


def test_resolve_keyset_id_returns_none_when_short_prefix_is_ambiguous() -> None:
    ambiguous = "01aaaaaaaaaaaaaa"
    twin = ambiguous + "44" * 25

    assert resolve_keyset_id(ambiguous, [FULL_A, twin]) is None


@pytest.mark.parametrize("keyset_id", ["01cccccccccccccc", "00ad268c4d1f5826", "01aaaa", ""])
def test_resolve_keyset_id_returns_none_when_unknown_or_not_a_short_id(keyset_id: str) -> None:
    assert resolve_keyset_id(keyset_id, [FULL_A, FULL_B, FULL_C]) is None


@pytest.mark.parametrize(
    ("secret", "locked"),
    [
        (
            '["P2PK",{"nonce":"da62796403af76c80cd6ce9153ed3746","data":"033281c37677ea273eb7183b783067f5244933ef78d8c3f15b1a77cb246099c26e"}]',
            True,
        ),
        ('["HTLC", {"data": "aa"}]', True),
        ("407915bc212be61a77e3e6d2aeb4c727980bda51cd06a6afc29e2861768a7837", False),
        ("[not json", False),
        ('["only-one"]', False),
        ("EhpennC9qB3iFlW8FZ_pZw", False),
    ],
)
def test_is_locked_secret_detects_nut10_well_known_secrets(secret: str, locked: bool) -> None:
    assert is_locked_secret(secret) is locked


def test_proofs_hash_is_sha256_of_sorted_secrets_joined_by_newline() -> None:
    proofs = [_proof(1, FULL_A, "b"), _proof(2, FULL_A, "a")]

    assert proofs_hash(proofs) == hashlib.sha256(b"a\nb").hexdigest()
    assert Token(mint="m", unit="sat", proofs=tuple(proofs)).token_hash == proofs_hash(reversed(proofs))
