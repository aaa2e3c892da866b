"""Cashu BDHKE on secp256k1 (NUT-00), DLEQ verification (NUT-12) and keyset id derivation (NUT-02)."""

import hashlib
import secrets
from collections.abc import Mapping

from coincurve import PrivateKey, PublicKey

# secp256k1 group order
CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
DOMAIN_SEPARATOR = b"Secp256k1_HashToCurve_Cashu_"
_MAX_HASH_TO_CURVE_ROUNDS = 1 << 16


def point(hex_point: str) -> PublicKey:
    """Parse a compressed point given in hex; ValueError when it is not one."""
    raw = bytes.fromhex(hex_point)
    if len(raw) != 33:  # noqa: PLR2004 - compressed secp256k1 point
        msg = "not a compressed point"
        raise ValueError(msg)
    return PublicKey(raw)


def point_hex(value: PublicKey) -> str:
    return bytes(value.format(compressed=True)).hex()


def _scalar_bytes(value: int) -> bytes:
    return (value % CURVE_ORDER).to_bytes(32, "big")


def _times(value: PublicKey, scalar: int) -> PublicKey:
    return value.multiply(_scalar_bytes(scalar))


def _base_times(scalar: int) -> PublicKey:
    return PrivateKey(_scalar_bytes(scalar)).public_key


def _combine(*points: PublicKey) -> PublicKey:
    return PublicKey.combine_keys(list(points))


def hash_to_curve(message: bytes) -> PublicKey:
    """NUT-00: `Y = PublicKey(0x02 || sha256(sha256(DST || message) || counter_le32))` for the first valid counter."""
    msg_hash = hashlib.sha256(DOMAIN_SEPARATOR + message).digest()
    for counter in range(_MAX_HASH_TO_CURVE_ROUNDS):
        candidate = hashlib.sha256(msg_hash + counter.to_bytes(4, "little")).digest()
        try:
            return PublicKey(b"\x02" + candidate)
        except ValueError:
            continue
    msg = "no point found for message"  # unreachable in practice: about half of all x are on the curve
    raise ValueError(msg)


def secret_y(secret: str) -> PublicKey:
    """The point a proof's secret maps to; proofs hash the UTF-8 bytes of the secret string."""
    return hash_to_curve(secret.encode())


def random_scalar() -> int:
    """A uniformly random non-zero scalar (blinding factors)."""
    while True:
        value = int.from_bytes(secrets.token_bytes(32), "big")
        if 0 < value < CURVE_ORDER:
            return value


def blind(y: PublicKey, r: int) -> PublicKey:
    """`B_ = Y + r·G`."""
    return _combine(y, _base_times(r))


def blind_message(secret: str, r: int) -> PublicKey:
    return blind(secret_y(secret), r)


def sign_blinded(b_: PublicKey, k: int) -> PublicKey:
    """The mint's side, `C_ = k·B_` (used by tests and fakes; the node never signs)."""
    return _times(b_, k)


def unblind(c_: PublicKey, r: int, mint_key: PublicKey) -> PublicKey:
    """`C = C_ - r·K`."""
    return _combine(c_, _times(mint_key, CURVE_ORDER - r))


def hash_e(*points: PublicKey) -> bytes:
    """NUT-12 challenge: sha256 of the concatenated uncompressed hex encodings."""
    joined = "".join(bytes(p.format(compressed=False)).hex() for p in points)
    return hashlib.sha256(joined.encode()).digest()


def verify_dleq(*, a: PublicKey, b_: PublicKey, c_: PublicKey, e: int, s: int) -> bool:
    """True when (e, s) proves `log_G(A) == log_B_(C_)`: `R1 = s·G - e·A`, `R2 = s·B_ - e·C_`, `e == hash_e(...)`."""
    if not (0 < s < CURVE_ORDER and 0 < e < CURVE_ORDER):
        return False
    try:
        r1 = _combine(_base_times(s), _times(a, CURVE_ORDER - e))
        r2 = _combine(_times(b_, s), _times(c_, CURVE_ORDER - e))
    except ValueError:  # a sum at infinity: not a valid proof
        return False
    return hash_e(r1, r2, a, c_) == e.to_bytes(32, "big")


def verify_signature_dleq(*, mint_key: str, b_: str, c_: str, e: str, s: str) -> bool:
    """NUT-12 check of a `BlindSignature` (hex inputs); False on any malformed input."""
    try:
        return verify_dleq(a=point(mint_key), b_=point(b_), c_=point(c_), e=int(e, 16), s=int(s, 16))
    except ValueError:
        return False


def verify_proof_dleq(*, mint_key: str, secret: str, c: str, e: str, s: str, r: str) -> bool:
    """NUT-12 check of a `Proof` carrying its blinding factor: rebuild `B_ = Y + r·G`, `C_ = C + r·A` and verify."""
    try:
        a = point(mint_key)
        blinding = int(r, 16)
        if not 0 < blinding < CURVE_ORDER:
            return False
        b_ = blind(secret_y(secret), blinding)
        c_ = _combine(point(c), _times(a, blinding))
        return verify_dleq(a=a, b_=b_, c_=c_, e=int(e, 16), s=int(s, 16))
    except ValueError:
        return False


def derive_keyset_id_v1(keys: Mapping[int, str]) -> str:
    """NUT-02 version 00: `00` + first 14 hex of sha256 over the compressed keys, ordered by amount."""
    concatenated = b"".join(bytes.fromhex(keys[amount]) for amount in sorted(keys))
    return "00" + hashlib.sha256(concatenated).hexdigest()[:14]


def derive_keyset_id_v2(
    keys: Mapping[int, str], unit: str, input_fee_ppk: int = 0, final_expiry: int | None = None
) -> str:
    """NUT-02 version 01: `01` + sha256 of `amount:key,…|unit:U[|input_fee_ppk:F][|final_expiry:E]`."""
    preimage = ",".join(f"{amount}:{keys[amount].lower()}" for amount in sorted(keys))
    preimage += f"|unit:{unit}"
    if input_fee_ppk:
        preimage += f"|input_fee_ppk:{input_fee_ppk}"
    if final_expiry is not None:
        preimage += f"|final_expiry:{final_expiry}"
    return "01" + hashlib.sha256(preimage.encode()).hexdigest()


def keyset_id_matches(
    keyset_id: str, keys: Mapping[int, str], unit: str, input_fee_ppk: int, final_expiry: int | None
) -> bool:
    """Whether the id a mint announces is the one its keys derive to (unknown id versions are not checked)."""
    if keyset_id.startswith("00") and len(keyset_id) == 16:  # noqa: PLR2004 - 8-byte v1 id
        return derive_keyset_id_v1(keys) == keyset_id
    if keyset_id.startswith("01"):
        return derive_keyset_id_v2(keys, unit, input_fee_ppk, final_expiry) == keyset_id
    return True
