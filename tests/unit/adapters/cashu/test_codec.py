"""cashuA/cashuB token and creqA payment request codecs: NUT-00/NUT-18 vectors, round trips and bad input."""

import base64
import json
from typing import Any

import cbor2
import pytest

from app.adapters.cashu import codec
from app.domain.cashu import MAX_TOKEN_PROOFS, Dleq, PaymentRequest, Proof, Token
from app.domain.errors import InvalidCashuTokenError, InvalidRequestError
from tests.unit.adapters.cashu.vectors import nut_vectors

V = nut_vectors()
POINT = "02bc9097997d81afb2cc7346b5e4345a9346bd2a506eb7958598a72f0cf85163ea"
POINT_2 = "029e8e5050b890a7d6c0968db16bc1d5d5fa040ea1de284f6ec69d61299f671059"
V2_KEYSET = "01c1e5f73350978ea53c7278ce901e7e7c54d763912c02566a1ea64f5486271d63"


def _proofs(case: dict[str, Any]) -> tuple[Proof, ...]:
    return tuple(Proof(amount=p["amount"], keyset_id=p["id"], secret=p["secret"], c=p["C"]) for p in case["proofs"])


def _v3(data: object) -> str:
    return "cashuA" + base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _v4(data: object) -> str:
    return "cashuB" + base64.urlsafe_b64encode(cbor2.dumps(data)).decode().rstrip("=")


def _v3_proof(text: str = "s1", amount: object = 1, c: str = POINT) -> dict[str, object]:
    return {"id": "009a1f293253e41e", "amount": amount, "secret": text, "C": c}


def _v3_token(*proofs: dict[str, object], mint: str = "http://mint.test") -> str:
    return _v3({"token": [{"mint": mint, "proofs": list(proofs)}], "unit": "sat"})


def test_decode_token_reads_nut00_v3_vector() -> None:
    case = V["token_v3"]

    token = codec.decode_token(case["serialized"])

    assert token == Token(mint=case["mint"], unit=case["unit"], proofs=_proofs(case), memo=case["memo"])
    assert token.amount == 10


@pytest.mark.parametrize("key", ["padded", "unpadded"])
def test_decode_token_reads_v3_vector_with_and_without_padding(key: str) -> None:
    token = codec.decode_token(V["token_v3"][key])

    assert token.memo == V["token_v3"]["padded_memo"]
    assert token.proofs == _proofs(V["token_v3"])


@pytest.mark.parametrize("raw", V["token_v3"]["incorrect"])
def test_decode_token_rejects_nut00_incorrect_v3_vectors(raw: str) -> None:
    with pytest.raises(InvalidCashuTokenError):
        codec.decode_token(raw)


@pytest.mark.parametrize("case", V["token_v4"])
def test_decode_token_reads_nut00_v4_vectors(case: dict[str, Any]) -> None:
    token = codec.decode_token(case["serialized"])

    assert token == Token(mint=case["mint"], unit=case["unit"], proofs=_proofs(case), memo=case["memo"])


@pytest.mark.parametrize("case", V["token_v4"])
def test_encode_token_reproduces_nut00_v4_vectors(case: dict[str, Any]) -> None:
    token = Token(mint=case["mint"], unit=case["unit"], proofs=_proofs(case), memo=case["memo"])

    assert codec.encode_token(token) == case["serialized"].rstrip("=")


@pytest.mark.parametrize("prefix", ["cashu:", "CASHU:", " "])
def test_decode_token_accepts_uri_prefix_and_whitespace(prefix: str) -> None:
    raw = V["token_v4"][0]["serialized"]

    assert codec.decode_token(prefix + raw) == codec.decode_token(raw)


def test_decode_token_accepts_standard_base64_alphabet() -> None:
    raw = V["token_v4"][0]["serialized"]
    standard = raw.replace("-", "+").replace("_", "/")

    assert standard != raw
    assert codec.decode_token(standard) == codec.decode_token(raw)


def test_encode_token_round_trips_with_dleq_and_short_v2_ids() -> None:
    dleq = Dleq(e="11" * 32, s="22" * 32, r="33" * 32)
    token = Token(
        mint="http://mint.test",
        unit="msat",
        proofs=(
            Proof(4, V2_KEYSET, "a", POINT, dleq),
            Proof(1, V2_KEYSET, "b", POINT_2),
        ),
    )

    decoded = codec.decode_token(codec.encode_token(token))

    assert decoded.proofs[0].keyset_id == V2_KEYSET[:16]
    assert decoded.proofs[0].dleq == dleq
    assert [(p.amount, p.secret, p.c) for p in decoded.proofs] == [(4, "a", POINT), (1, "b", POINT_2)]
    assert (decoded.mint, decoded.unit, decoded.memo) == ("http://mint.test", "msat", None)


def test_token_hash_ignores_encoding_and_proof_order() -> None:
    case = V["token_v3"]
    v3 = codec.decode_token(case["serialized"])
    reordered = Token(mint=v3.mint, unit=v3.unit, proofs=tuple(reversed(v3.proofs)))

    v4 = codec.decode_token(codec.encode_token(reordered))

    assert v4.token_hash == v3.token_hash
    assert len(v3.token_hash) == 64


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("cashuA", "empty payload"),
        ("cashuB", "empty payload"),
        ("cashuC" + "e30", "unknown version"),
        ("cashuBpGF0gaJhaUgArSaMTR9YJmFwgaNhYQFhc3hAOWE2ZGJi", "truncated"),
        ("cashuB$$$not-base64!!", "garbled"),
        ("cashuAeyJ0b2tlbiI6W119", "no entries"),
        ("cashuA" + base64.urlsafe_b64encode(b"not json").decode(), "not JSON"),
        ("cashuB" + base64.urlsafe_b64encode(b"\xff\xff").decode(), "not CBOR"),
        (_v4([1, 2, 3]), "not a map"),
        (_v4({"m": "http://mint.test", "u": "sat", "t": []}), "no keyset groups"),
        (_v3_token(), "no proofs"),
        (
            _v3(
                {
                    "token": [
                        {"mint": "http://a.test", "proofs": [_v3_proof("x")]},
                        {"mint": "http://b.test", "proofs": [_v3_proof("y")]},
                    ]
                }
            ),
            "several mints",
        ),
        (_v3_token(_v3_proof("x"), _v3_proof("x")), "duplicate proofs"),
        (_v3_token(_v3_proof(amount=0)), "zero amount"),
        (_v3_token(_v3_proof(amount=-8)), "negative amount"),
        (_v3_token(_v3_proof(amount=1.5)), "fractional amount"),
        (_v3_token(_v3_proof(amount=True)), "boolean amount"),
        (_v3_token(_v3_proof(amount="8")), "string amount"),
        (_v3_token(_v3_proof(amount=2**63)), "amount beyond BIGINT"),
        (_v3_token(_v3_proof("x", 2**62), _v3_proof("y", 2**62)), "total beyond BIGINT"),
        (_v3_token(_v3_proof(c="02" + "00" * 32)), "not a curve point"),
        (_v3_token(_v3_proof(c="zz")), "not hex"),
        (_v3_token(_v3_proof(text='["P2PK",{"nonce":"00","data":"02aa"}]')), "NUT-10 locked"),
        (_v3_token(_v3_proof(text='["HTLC",{"nonce":"00","data":"aa"}]')), "NUT-10 HTLC"),
        (_v3({"token": [{"proofs": [_v3_proof()]}]}), "no mint"),
    ],
)
def test_decode_token_rejects_bad_input(raw: str, reason: str) -> None:
    with pytest.raises(InvalidCashuTokenError) as info:
        codec.decode_token(raw)

    assert raw[6:20] not in info.value.message or len(raw) <= 6, reason  # never echoes the token


def test_decode_token_rejects_more_than_500_proofs() -> None:
    proofs = [_v3_proof(text=f"s{i}") for i in range(MAX_TOKEN_PROOFS + 1)]

    with pytest.raises(InvalidCashuTokenError, match="500"):
        codec.decode_token(_v3_token(*proofs))


def test_decode_token_accepts_exactly_500_proofs() -> None:
    proofs = [_v3_proof(text=f"s{i}") for i in range(MAX_TOKEN_PROOFS)]

    assert len(codec.decode_token(_v3_token(*proofs)).proofs) == MAX_TOKEN_PROOFS


def test_decode_token_rejects_tokens_over_100_kib() -> None:
    huge = _v3_token(_v3_proof(text="x" * 110_000))

    with pytest.raises(InvalidCashuTokenError, match="bytes"):
        codec.decode_token(huge)


def test_decode_token_merges_entries_of_one_mint_in_cashu_a() -> None:
    raw = _v3(
        {
            "token": [
                {"mint": "http://mint.test/", "proofs": [_v3_proof("x")]},
                {"mint": "http://mint.test", "proofs": [_v3_proof("y", 2)]},
            ]
        }
    )

    token = codec.decode_token(raw)

    assert (token.mint, token.unit, token.amount) == ("http://mint.test", "sat", 3)


def test_decode_token_defaults_cashu_a_unit_to_sat() -> None:
    raw = _v3({"token": [{"mint": "http://mint.test", "proofs": [_v3_proof()]}]})

    assert codec.decode_token(raw).unit == "sat"


@pytest.mark.parametrize("case", V["payment_requests"], ids=lambda c: c["name"])
def test_decode_payment_request_reads_nut18_vectors(case: dict[str, Any]) -> None:
    request = codec.decode_payment_request(case["encoded"])

    assert request == PaymentRequest(
        amount=case["a"],
        unit=case["u"],
        mints=tuple(case["m"]),
        single_use=case["s"],
        description=case["d"],
        request_id=case["i"],
        has_transports=case["transports"],
        has_lock=case["locked"],
    )


def test_encode_payment_request_reproduces_nut18_minimal_vector() -> None:
    case = next(c for c in V["payment_requests"] if c["name"] == "minimal")

    encoded = codec.encode_payment_request(
        PaymentRequest(amount=None, unit="sat", mints=tuple(case["m"]), request_id=case["i"])
    )

    assert encoded == case["encoded"]


def test_payment_request_round_trips_the_node_402_shape() -> None:
    request = PaymentRequest(
        amount=21,
        unit="sat",
        mints=("http://primary.test", "http://other.test"),
        single_use=True,
        description="routstr gpt-4o-mini",
    )

    encoded = codec.encode_payment_request(request)

    assert encoded.startswith("creqA")
    assert len(encoded[5:]) % 4 == 0  # padded base64url
    assert codec.decode_payment_request(encoded) == request
    assert codec.decode_payment_request(encoded.rstrip("=")) == request
    assert list(cbor2.loads(base64.urlsafe_b64decode(encoded[5:]))) == ["a", "u", "s", "m", "d"]


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "creqA",
        "creqB" + "oA==",
        "creqA!!!",
        "creqA" + base64.urlsafe_b64encode(cbor2.dumps([1])).decode(),
        "creqA" + base64.urlsafe_b64encode(cbor2.dumps({"a": "ten"})).decode(),
    ],
)
def test_decode_payment_request_rejects_bad_input(raw: str) -> None:
    with pytest.raises(InvalidRequestError):
        codec.decode_payment_request(raw)
