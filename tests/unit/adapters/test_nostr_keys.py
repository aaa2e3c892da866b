"""BIP-340 signing and verification with coincurve, against rows of the BIP's published test-vectors.csv."""

from typing import NamedTuple

import pytest

from app.adapters.nostr.keys import SecpEventSigner, SecpSignatureVerifier


class SigningVector(NamedTuple):
    row: int
    secret: str
    public: str
    aux: str
    message: str
    signature: str


class VerifyVector(NamedTuple):
    row: int
    public: str
    message: str
    signature: str
    expected: bool


# bip-0340/test-vectors.csv (bitcoin/bips): index, secret key, public key, aux_rand, message, signature, valid.
_SIGNING_ROWS = [
    (
        0,
        "0000000000000000000000000000000000000000000000000000000000000003",
        "F9308A019258C31049344F85F89D5229B531C845836F99B08601F113BCE036F9",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "E907831F80848D1069A5371B402410364BDF1C5F8307B0084C55F1CE2DCA8215"
        "25F66A4A85EA8B71E482A74F382D2CE5EBEEE8FDB2172F477DF4900D310536C0",
    ),
    (
        1,
        "B7E151628AED2A6ABF7158809CF4F3C762E7160F38B4DA56A784D9045190CFEF",
        "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
        "0000000000000000000000000000000000000000000000000000000000000001",
        "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
        "6896BD60EEAE296DB48A229FF71DFE071BDE413E6D43F917DC8DCF8C78DE3341"
        "8906D11AC976ABCCB20B091292BFF4EA897EFCB639EA871CFA95F6DE339E4B0A",
    ),
    (
        2,
        "C90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B14E5C9",
        "DD308AFEC5777E13121FA72B9CC1B7CC0139715309B086C960E18FD969774EB8",
        "C87AA53824B4D7AE2EB035A2B5BBBCCC080E76CDC6D1692C4B0B62D798E6D906",
        "7E2D58D8B3BCDF1ABADEC7829054F90DDA9805AAB56C77333024B9D0A508B75C",
        "5831AAEED7B44BB74E5EAB94BA9D4294C49BCF2A60728D8B4C200F50DD313C1B"
        "AB745879A5AD954A72C45A91C3A51D3C7ADEA98D82F8481E0E1E03674A6F3FB7",
    ),
    (
        3,
        "0B432B2677937381AEF05BB02A66ECD012773062CF3FA2549E44F58ED2401710",
        "25D1DFF95105F5253C4022F628A996AD3A0D95FBF21D468A1B33F8C160D8F517",
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
        "7EB0509757E246F19449885651611CB965ECC1A187DD51B64FDA1EDC9637D5EC"
        "97582B9CB13DB3933705B32BA982AF5AF25FD78881EBB32771FC5922EFC66EA3",
    ),
]

# Verification-only rows: index, public key, message, signature, expected result.
_MSG = "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89"
_PK = "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659"
_VERIFY_ROWS = [
    (
        4,
        "D69C3509BB99E412E68B0FE8544E72837DFA30746D8BE2AA65975F29D22DC7B9",
        "4DF3C3F68FCC83B27E9D42C90431A72499F17875C81A599B566C9889B9696703",
        "00000000000000000000003B78CE563F89A0ED9414F5AA28AD0D96D6795F9C63"
        "76AFB1548AF603B3EB45C9F8207DEE1060CB71C04E80F593060B07D28308D7F4",
        True,
    ),
    (
        5,  # public key not on the curve
        "EEFDEA4CDB677750A420FEE807EACF21EB9898AE79B9768766E4FAA04A2D4A34",
        _MSG,
        "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769"
        "69E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B",
        False,
    ),
    (
        6,  # has_even_y(R) is false
        _PK,
        _MSG,
        "FFF97BD5755EEEA420453A14355235D382F6472F8568A18B2F057A1460297556"
        "3CC27944640AC607CD107AE10923D9EF7A73C643E166BE5EBEAFA34B1AC553E2",
        False,
    ),
    (
        7,  # negated message
        _PK,
        _MSG,
        "1FA62E331EDBC21C394792D2AB1100A7B432B013DF3F6FF4F99FCB33E0E1515F"
        "28890B3EDB6E7189B630448B515CE4F8622A954CFE545735AAEA5134FCCDB2BD",
        False,
    ),
    (
        8,  # negated s value
        _PK,
        _MSG,
        "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769"
        "961764B3AA9B2FFCB6EF947B6887A226E8D7C93E00C5ED0C1834FF0D0C2E6DA6",
        False,
    ),
    (
        13,  # sig[32:64] is equal to curve order
        _PK,
        _MSG,
        "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769"
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",
        False,
    ),
    (
        14,  # public key exceeds the field size
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC30",
        _MSG,
        "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769"
        "69E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B",
        False,
    ),
]


SIGNING_VECTORS = [SigningVector(*row) for row in _SIGNING_ROWS]
VERIFY_VECTORS = [VerifyVector(*row) for row in _VERIFY_ROWS]


@pytest.mark.parametrize("vector", SIGNING_VECTORS, ids=lambda v: f"bip340-{v.row}")
def test_signer_matches_bip340_vector(vector: SigningVector) -> None:
    signer = SecpEventSigner(bytes.fromhex(vector.secret), aux_randomness=lambda: bytes.fromhex(vector.aux))

    produced = signer.sign(vector.message.lower())

    assert signer.public_key == vector.public.lower()
    assert produced == vector.signature.lower()


@pytest.mark.parametrize("vector", SIGNING_VECTORS, ids=lambda v: f"bip340-{v.row}")
def test_verifier_accepts_bip340_signing_vector(vector: SigningVector) -> None:
    verifier = SecpSignatureVerifier()

    assert verifier.verify(vector.public.lower(), vector.message.lower(), vector.signature.lower())


@pytest.mark.parametrize("vector", VERIFY_VECTORS, ids=lambda v: f"bip340-{v.row}")
def test_verifier_matches_bip340_verification_vector(vector: VerifyVector) -> None:
    verifier = SecpSignatureVerifier()

    result = verifier.verify(vector.public.lower(), vector.message.lower(), vector.signature.lower())

    assert result is vector.expected


@pytest.mark.parametrize(
    ("public", "message", "signature"),
    [
        ("zz" * 32, "00" * 32, "00" * 64),
        (_PK.lower(), "00" * 31, "00" * 64),
        (_PK.lower(), "00" * 32, "00" * 63),
        ("", "", ""),
    ],
)
def test_verifier_returns_false_when_input_is_malformed(public: str, message: str, signature: str) -> None:
    assert SecpSignatureVerifier().verify(public, message, signature) is False


def test_signer_signature_verifies_when_aux_randomness_is_fresh() -> None:
    signer = SecpEventSigner(bytes.fromhex("0B432B2677937381AEF05BB02A66ECD012773062CF3FA2549E44F58ED2401710"))
    event_id = "ab" * 32

    first, second = signer.sign(event_id), signer.sign(event_id)

    assert first != second
    assert SecpSignatureVerifier().verify(signer.public_key, event_id, first)
    assert SecpSignatureVerifier().verify(signer.public_key, event_id, second)


def test_signer_repr_hides_the_secret_key() -> None:
    secret_hex = SIGNING_VECTORS[1].secret

    text = repr(SecpEventSigner(bytes.fromhex(secret_hex)))

    assert secret_hex.lower() not in text.lower()
    assert "dff1d77f" in text


@pytest.mark.parametrize(
    "secret", ["00" * 32, "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141", "01" * 31]
)
def test_signer_rejects_secret_when_outside_the_curve_range(secret: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - coincurve raises a bare ValueError
        SecpEventSigner(bytes.fromhex(secret))
