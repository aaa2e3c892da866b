"""NUT-00 token codecs (`cashuA` JSON, `cashuB` CBOR) and NUT-18 payment requests (`creqA`)."""

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn, TypeVar

import cbor2

from app.adapters.cashu.crypto import point
from app.domain.cashu import (
    KEYSET_ID_V2_PREFIX,
    MAX_AMOUNT,
    MAX_TOKEN_BYTES,
    MAX_TOKEN_PROOFS,
    Dleq,
    PaymentRequest,
    Proof,
    Token,
    is_locked_secret,
)
from app.domain.errors import InvalidCashuTokenError, InvalidRequestError

URI_PREFIX = "cashu:"
V3_PREFIX = "cashuA"
V4_PREFIX = "cashuB"
CREQ_PREFIX = "creqA"
DEFAULT_UNIT = "sat"
_SHORT_ID_BYTES = 8
_HEX = frozenset("0123456789abcdef")
T = TypeVar("T")


def _fail(reason: str, cause: Exception | None = None) -> NoReturn:
    # The reason never quotes the token: tokens are bearer secrets.
    message = f"Invalid Cashu token: {reason}"
    raise InvalidCashuTokenError(message) from cause


def b64url_decode(text: str) -> bytes:
    """Strict base64 decoding accepting the URL-safe and standard alphabets, with or without padding."""
    body = text.rstrip("=")
    if len(body) % 4 == 1:
        msg = "truncated base64"
        raise ValueError(msg)
    body = body.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except binascii.Error as exc:
        msg = "not base64"
        raise ValueError(msg) from exc


def b64url_encode(data: bytes, *, padded: bool) -> str:
    text = base64.urlsafe_b64encode(data).decode()
    return text if padded else text.rstrip("=")


# -- decoding --------------------------------------------------------------------------------------------------------
def decode_token(raw: str) -> Token:
    """Parse a `cashuA`/`cashuB` token; see `TokenCodec.decode_token` for what is refused."""
    if not isinstance(raw, str):
        _fail("not a string")
    text = raw.strip()
    if len(text.encode()) > MAX_TOKEN_BYTES:
        _fail(f"larger than {MAX_TOKEN_BYTES} bytes")
    if text[: len(URI_PREFIX)].lower() == URI_PREFIX:
        text = text[len(URI_PREFIX) :]
    if text.startswith(V3_PREFIX):
        token = _decode_v3(_payload(text[len(V3_PREFIX) :]))
    elif text.startswith(V4_PREFIX):
        token = _decode_v4(_payload(text[len(V4_PREFIX) :]))
    else:
        _fail("unknown prefix (expected cashuA or cashuB)")
    _validate(token)
    return token


def _payload(body: str) -> bytes:
    if not body:
        _fail("empty")
    try:
        return b64url_decode(body)
    except ValueError as exc:
        _fail("not base64url", exc)


def _decode_v3(payload: bytes) -> Token:
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        _fail("not JSON", exc)
    if not isinstance(data, dict) or not isinstance(data.get("token"), list) or not data["token"]:
        _fail("no token entries")
    mints: list[str] = []
    proofs: list[Proof] = []
    for entry in data["token"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("mint"), str) or not entry["mint"]:
            _fail("token entry without a mint")
        if not isinstance(entry.get("proofs"), list):
            _fail("token entry without proofs")
        mint = entry["mint"].rstrip("/")
        if mint not in mints:
            mints.append(mint)
        proofs.extend(_v3_proof(p) for p in entry["proofs"])
    if len(mints) > 1:
        _fail("proofs from several mints")
    return Token(
        mint=mints[0],
        unit=_text(data.get("unit", DEFAULT_UNIT), "unit"),
        proofs=tuple(proofs),
        memo=_optional_text(data.get("memo"), "memo"),
    )


def _v3_proof(data: object) -> Proof:
    if not isinstance(data, dict):
        _fail("proof is not an object")
    return Proof(
        amount=_amount(data.get("amount")),
        keyset_id=_keyset_id(data.get("id")),
        secret=_text(data.get("secret"), "secret"),
        c=_text(data.get("C"), "C"),
        dleq=_v3_dleq(data.get("dleq")),
        witness=_optional_text(data.get("witness"), "witness"),
    )


def _v3_dleq(data: object) -> Dleq | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        _fail("malformed DLEQ")
    return Dleq(
        e=_text(data.get("e"), "dleq.e"), s=_text(data.get("s"), "dleq.s"), r=_optional_text(data.get("r"), "dleq.r")
    )


def _decode_v4(payload: bytes) -> Token:
    try:
        data = cbor2.loads(payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError, RecursionError) as exc:
        _fail("not CBOR", exc)
    if not isinstance(data, dict):
        _fail("not a CBOR map")
    groups = data.get("t")
    if not isinstance(groups, list) or not groups:
        _fail("no keyset groups")
    proofs: list[Proof] = []
    for group in groups:
        if not isinstance(group, dict) or not isinstance(group.get("i"), bytes) or not group["i"]:
            _fail("keyset group without an id")
        if not isinstance(group.get("p"), list):
            _fail("keyset group without proofs")
        keyset_id = group["i"].hex()
        proofs.extend(_v4_proof(keyset_id, p) for p in group["p"])
    mint = _text(data.get("m"), "mint").rstrip("/")
    return Token(
        mint=mint,
        unit=_text(data.get("u"), "unit"),
        proofs=tuple(proofs),
        memo=_optional_text(data.get("d"), "memo"),
    )


def _v4_proof(keyset_id: str, data: object) -> Proof:
    if not isinstance(data, dict):
        _fail("proof is not a map")
    return Proof(
        amount=_amount(data.get("a")),
        keyset_id=keyset_id,
        secret=_text(data.get("s"), "secret"),
        c=_hex_bytes(data.get("c"), "c"),
        dleq=_v4_dleq(data.get("d")),
        witness=_optional_text(data.get("w"), "witness"),
    )


def _v4_dleq(data: object) -> Dleq | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        _fail("malformed DLEQ")
    r = data.get("r")
    return Dleq(
        e=_hex_bytes(data.get("e"), "dleq.e"),
        s=_hex_bytes(data.get("s"), "dleq.s"),
        r=None if r is None else _hex_bytes(r, "dleq.r"),
    )


def _amount(value: object) -> int:
    if type(value) is not int:
        _fail("amount is not an integer")
    if value <= 0:
        _fail("amount is not positive")
    if value > MAX_AMOUNT:
        _fail("amount is too large")
    return value


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        _fail(f"missing {name}")
    return value


def _optional_text(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        _fail(f"{name} is not text")
    return value


def _hex_bytes(value: object, name: str) -> str:
    if not isinstance(value, bytes) or not value:
        _fail(f"missing {name}")
    return value.hex()


def _keyset_id(value: object) -> str:
    # cashuA may carry legacy base64 keyset ids; the mint decides whether it knows them.
    return _text(value, "keyset id")


def _validate(token: Token) -> None:
    if not token.proofs:
        _fail("no proofs")
    if len(token.proofs) > MAX_TOKEN_PROOFS:
        _fail(f"more than {MAX_TOKEN_PROOFS} proofs")
    if token.amount > MAX_AMOUNT:
        _fail("total amount is too large")
    secrets_seen: set[str] = set()
    for proof in token.proofs:
        if proof.secret in secrets_seen:
            _fail("duplicate proofs")
        secrets_seen.add(proof.secret)
        if is_locked_secret(proof.secret):
            _fail("spending conditions (NUT-10) are not accepted")
        try:
            point(proof.c)
        except ValueError as exc:
            _fail("a signature is not a curve point", exc)


# -- encoding --------------------------------------------------------------------------------------------------------
def encode_token(token: Token) -> str:
    """`cashuB` + unpadded base64url(CBOR); v2 keyset ids are shortened to 8 bytes as NUT-00 V4 prescribes."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for proof in token.proofs:
        groups.setdefault(_token_keyset_id(proof.keyset_id), []).append(_v4_proof_map(proof))
    data: dict[str, Any] = {"t": [{"i": bytes.fromhex(kid), "p": proofs} for kid, proofs in groups.items()]}
    if token.memo is not None:
        data["d"] = token.memo
    data["m"] = token.mint
    data["u"] = token.unit
    return V4_PREFIX + b64url_encode(cbor2.dumps(data), padded=False)


def _token_keyset_id(keyset_id: str) -> str:
    kid = keyset_id.lower()
    if not kid or len(kid) % 2 or not set(kid) <= _HEX:
        msg = "cashuB needs hex keyset ids"
        raise ValueError(msg)
    if kid.startswith(KEYSET_ID_V2_PREFIX):
        return kid[: 2 * _SHORT_ID_BYTES]
    return kid


def _v4_proof_map(proof: Proof) -> dict[str, Any]:
    data: dict[str, Any] = {"a": proof.amount, "s": proof.secret, "c": bytes.fromhex(proof.c)}
    if proof.dleq is not None:
        dleq: dict[str, bytes] = {"e": bytes.fromhex(proof.dleq.e), "s": bytes.fromhex(proof.dleq.s)}
        if proof.dleq.r is not None:
            dleq["r"] = bytes.fromhex(proof.dleq.r)
        data["d"] = dleq
    if proof.witness is not None:
        data["w"] = proof.witness
    return data


# -- NUT-18 payment requests -----------------------------------------------------------------------------------------
def encode_payment_request(request: PaymentRequest) -> str:
    """`creqA` + padded base64url(CBOR map in the order i, a, u, s, m, d); absent fields are left out."""
    data: dict[str, Any] = {}
    if request.request_id is not None:
        data["i"] = request.request_id
    if request.amount is not None:
        data["a"] = request.amount
    if request.unit is not None:
        data["u"] = request.unit
    if request.single_use is not None:
        data["s"] = request.single_use
    if request.mints:
        data["m"] = list(request.mints)
    if request.description is not None:
        data["d"] = request.description
    return CREQ_PREFIX + b64url_encode(cbor2.dumps(data), padded=True)


def decode_payment_request(raw: str) -> PaymentRequest:
    """Parse `creqA…`, padded or not. Raises InvalidRequestError."""
    text = raw.strip()
    if not text.startswith(CREQ_PREFIX):
        msg = "not a creqA payment request"
        raise InvalidRequestError(msg)
    try:
        data = cbor2.loads(b64url_decode(text[len(CREQ_PREFIX) :]))
    except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError, RecursionError) as exc:
        msg = "undecodable payment request"
        raise InvalidRequestError(msg) from exc
    if not isinstance(data, dict):
        msg = "payment request is not a CBOR map"
        raise InvalidRequestError(msg)
    return PaymentRequest(
        amount=_creq_field(data, "a", int),
        unit=_creq_field(data, "u", str),
        mints=tuple(_creq_strings(data.get("m"))),
        single_use=_creq_field(data, "s", bool),
        description=_creq_field(data, "d", str),
        request_id=_creq_field(data, "i", str),
        has_transports=bool(data.get("t")),
        has_lock=data.get("nut10") is not None,
    )


def _creq_field(data: Mapping[str, object], key: str, kind: type[T]) -> T | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        msg = f"payment request field {key!r} has the wrong type"
        raise InvalidRequestError(msg)
    return value


def _creq_strings(value: object) -> Iterable[str]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        msg = "payment request field 'm' must be a list of strings"
        raise InvalidRequestError(msg)
    return value


class CashuTokenCodec:
    """The `TokenCodec` port over the functions above."""

    def decode_token(self, raw: str) -> Token:
        return decode_token(raw)

    def encode_token(self, token: Token) -> str:
        return encode_token(token)

    def encode_payment_request(self, request: PaymentRequest) -> str:
        return encode_payment_request(request)

    def decode_payment_request(self, raw: str) -> PaymentRequest:
        return decode_payment_request(raw)
