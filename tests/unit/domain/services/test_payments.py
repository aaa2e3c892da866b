"""RedemptionService, BalanceService and token-as-key authentication on fakes: SPEC §7.2 edge cases."""

import asyncio
import base64
import json
from dataclasses import dataclass, field

import pytest

from app.adapters.cashu.codec import CashuTokenCodec
from app.domain.accounts import hash_api_key
from app.domain.cashu import Proof, Token
from app.domain.errors import (
    DomainError,
    InvalidCashuTokenError,
    InvalidRequestError,
    MintMismatchError,
    MintUnreachableError,
    RedemptionPendingError,
    SwapFeesExceedAmountError,
    TokenAlreadySpentError,
    TokenPendingError,
    TokenZeroValueError,
    UnsupportedUnitError,
    UntrustedMintError,
)
from app.domain.money import Msat
from app.domain.services.accounts import AccountService
from app.domain.services.payments import BalanceService, MintPolicy, RedemptionService
from app.domain.wallet import (
    NewRedemption,
    RedemptionState,
    WalletProofState,
    token_api_key,
    token_key_hash,
)
from tests.fakes.clock import FixedClock
from tests.fakes.ledger import InMemoryLedger, InMemoryLedgerAudit
from tests.fakes.mint import FakeMint
from tests.fakes.wallet import InMemoryRedemptions, ProofStore

MINT = "http://mint.test"
FEE_MINT = "http://fee.test"
UNTRUSTED = "http://untrusted.test"
TIMEOUT = 30.0


@dataclass
class Env:
    service: RedemptionService
    mint: FakeMint
    redemptions: InMemoryRedemptions
    ledger: InMemoryLedger
    clock: FixedClock
    proofs: ProofStore
    codec: CashuTokenCodec = field(default_factory=CashuTokenCodec)
    sleeps: list[float] = field(default_factory=list)

    def token(self, amount: int, mint: str = MINT, unit: str | None = None) -> str:
        return self.codec.encode_token(self.mint.issue(mint, amount, unit=unit))

    def deposits(self) -> list[int]:
        return [e.amount_msat for e in self.ledger.entries if e.kind == "deposit"]


@pytest.fixture
def env() -> Env:
    ledger = InMemoryLedger()
    proofs = ProofStore()
    redemptions = InMemoryRedemptions(ledger, proofs)
    mint = FakeMint({MINT: 0, FEE_MINT: 100, UNTRUSTED: 0})
    clock = FixedClock()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)
        await asyncio.sleep(0)

    service = RedemptionService(
        codec=CashuTokenCodec(),
        mint=mint,
        redemptions=redemptions,
        ledger=ledger,
        clock=clock,
        policy=MintPolicy(trusted_mints=(MINT, FEE_MINT), unit="sat"),
        timeout_seconds=TIMEOUT,
        sleep=sleep,
    )
    return Env(service, mint, redemptions, ledger, clock, proofs, sleeps=sleeps)


async def _audit(env: Env) -> None:
    assert await InMemoryLedgerAudit(env.ledger).violations() == []
    for mint in (MINT, FEE_MINT):
        owed = sum(k.balance.value for k in env.ledger.keys.values() if k.refund_mint_url == mint)
        assert owed <= env.proofs.value(mint, "sat") * 1000


# -- happy path and idempotency --------------------------------------------------------------------------------------
async def test_redeem_credits_new_key_with_token_mint_and_unit(env: Env) -> None:
    token = env.token(21)

    redeemed = await env.service.redeem(token, key_hash=token_key_hash(token))

    assert redeemed.credited == Msat(21_000)
    assert redeemed.key.balance == Msat(21_000)
    assert (redeemed.key.refund_mint_url, redeemed.key.refund_unit) == (MINT, "sat")
    assert redeemed.redemption.state is RedemptionState.CREDITED
    assert env.deposits() == [21_000]
    assert env.proofs.value(MINT, "sat") == 21
    assert all(r.state is WalletProofState.UNSPENT for r in env.proofs.rows)
    await _audit(env)


async def test_redeem_returns_prior_credit_when_same_key_presents_token_again(env: Env) -> None:
    token = env.token(8)
    key_hash = token_key_hash(token)
    await env.service.redeem(token, key_hash=key_hash)

    again = await env.service.redeem(token, key_hash=key_hash)

    assert again.credited == Msat(8_000)
    assert env.deposits() == [8_000]
    assert env.mint.count("swap") == 1


async def test_redeem_refuses_when_token_was_credited_to_another_key(env: Env) -> None:
    token = env.token(8)
    await env.service.redeem(token, key_hash=token_key_hash(token))

    with pytest.raises(TokenAlreadySpentError):
        await env.service.redeem(token, key_hash="b" * 64)

    assert env.deposits() == [8_000]


async def test_redeem_credits_amount_minus_input_fee_at_fee_mint(env: Env) -> None:
    token = env.token(64, mint=FEE_MINT)  # one proof at 100 ppk: fee ceil(100/1000) = 1

    redeemed = await env.service.redeem(token, key_hash=token_key_hash(token))

    assert redeemed.credited == Msat(63_000)
    assert redeemed.redemption.fee == 1
    assert env.proofs.value(FEE_MINT, "sat") == 63
    await _audit(env)


# -- trust and unit before any network call --------------------------------------------------------------------------
async def test_redeem_refuses_untrusted_mint_naming_accepted_mints_without_calling_it(env: Env) -> None:
    token = env.token(8, mint=UNTRUSTED)

    with pytest.raises(UntrustedMintError) as raised:
        await env.service.redeem(token, key_hash=token_key_hash(token))

    assert MINT in raised.value.message
    assert FEE_MINT in raised.value.message
    assert env.mint.calls == []
    assert env.redemptions.rows == {}


async def test_redeem_accepts_trusted_mint_url_with_other_case_and_trailing_slash(env: Env) -> None:
    issued = env.mint.issue(MINT, 4)
    token = env.codec.encode_token(Token(mint="HTTP://MINT.TEST/", unit="sat", proofs=issued.proofs))

    redeemed = await env.service.redeem(token, key_hash=token_key_hash(token))

    assert redeemed.key.refund_mint_url == MINT


async def test_redeem_refuses_other_unit_without_network_call(env: Env) -> None:
    token = env.token(8, unit="usd")

    with pytest.raises(UnsupportedUnitError):
        await env.service.redeem(token, key_hash=token_key_hash(token))

    assert env.mint.calls == []


async def test_redeem_refuses_topup_from_other_mint_before_network_call(env: Env) -> None:
    token = env.token(8, mint=FEE_MINT)

    with pytest.raises(MintMismatchError):
        await env.service.redeem(token, key_hash="a" * 64, require=(MINT, "sat"))

    assert env.mint.calls == []


# -- mint outcomes ---------------------------------------------------------------------------------------------------
async def test_redeem_marks_failed_and_creates_nothing_when_mint_says_spent(env: Env) -> None:
    token = env.token(8)
    env.mint.mints[MINT].spent.update(p.secret for p in env.codec.decode_token(token).proofs)

    with pytest.raises(TokenAlreadySpentError):
        await env.service.redeem(token, key_hash=token_key_hash(token))

    (row,) = env.redemptions.rows.values()
    assert row.state is RedemptionState.FAILED
    assert env.ledger.keys == {}
    assert env.ledger.entries == []


async def test_redeem_aborts_with_409_then_succeeds_when_proofs_no_longer_pending(env: Env) -> None:
    token = env.token(8)
    secrets = {p.secret for p in env.codec.decode_token(token).proofs}
    env.mint.mints[MINT].pending.update(secrets)

    with pytest.raises(TokenPendingError):
        await env.service.redeem(token, key_hash=token_key_hash(token))
    (row,) = env.redemptions.rows.values()
    assert row.state is RedemptionState.ABORTED
    env.mint.mints[MINT].pending.clear()
    redeemed = await env.service.redeem(token, key_hash=token_key_hash(token))

    assert redeemed.credited == Msat(8_000)
    assert env.deposits() == [8_000]
    await _audit(env)


async def test_redeem_restores_outputs_when_swap_reply_is_lost(env: Env) -> None:
    token = env.token(13)
    env.mint.lose_swap_replies = 1

    redeemed = await env.service.redeem(token, key_hash=token_key_hash(token))

    assert redeemed.credited == Msat(13_000)
    assert env.mint.count("check_state") == 1
    assert env.mint.count("restore") == 1
    assert env.mint.count("swap") == 1
    await _audit(env)


async def test_redeem_retries_once_with_same_outputs_when_swap_never_arrived(env: Env) -> None:
    token = env.token(13)
    env.mint.drop_swap_requests = 1

    redeemed = await env.service.redeem(token, key_hash=token_key_hash(token))

    assert redeemed.credited == Msat(13_000)
    assert env.mint.count("swap") == 2
    assert env.mint.count("prepare_outputs") == 1


async def test_redeem_aborts_with_503_and_leaves_token_unspent_when_retry_is_also_lost(env: Env) -> None:
    token = env.token(13)
    env.mint.drop_swap_requests = 2

    with pytest.raises(MintUnreachableError):
        await env.service.redeem(token, key_hash=token_key_hash(token))

    (row,) = env.redemptions.rows.values()
    assert row.state is RedemptionState.ABORTED
    assert not any(env.mint.is_spent(MINT, p) for p in env.codec.decode_token(token).proofs)
    assert env.ledger.entries == []


async def test_redeem_stays_pending_with_retry_after_when_checkstate_is_unreachable(env: Env) -> None:
    token = env.token(13)
    env.mint.lose_swap_replies = 1
    env.mint.fail_next["check_state"] = MintUnreachableError("down")

    with pytest.raises(RedemptionPendingError) as raised:
        await env.service.redeem(token, key_hash=token_key_hash(token))

    assert raised.value.retry_after_seconds == 2
    (row,) = env.redemptions.rows.values()
    assert row.state is RedemptionState.PENDING
    assert env.ledger.entries == []


async def test_redeem_keeps_token_unspent_and_claim_retryable_when_mint_is_unreachable(env: Env) -> None:
    token = env.token(8)
    env.mint.fail_next["swap"] = MintUnreachableError("down")

    with pytest.raises(MintUnreachableError):
        await env.service.redeem(token, key_hash=token_key_hash(token))
    redeemed = await env.service.redeem(token, key_hash=token_key_hash(token))

    assert redeemed.credited == Msat(8_000)
    assert env.deposits() == [8_000]


async def test_redeem_reconciles_stale_pending_claim_before_crediting(env: Env) -> None:
    token = env.token(5)
    key_hash = token_key_hash(token)
    decoded = env.codec.decode_token(token)
    await env.redemptions.claim(
        NewRedemption(
            token_hash=decoded.token_hash,
            key_hash=key_hash,
            mint_url=MINT,
            unit="sat",
            amount=5,
            fee=0,
            input_ys=tuple(env.mint.proof_ys(decoded.proofs)),
            now=env.clock.now(),
        )
    )
    env.clock.advance(2 * TIMEOUT + 1)

    redeemed = await env.service.redeem(token, key_hash=key_hash)

    assert redeemed.credited == Msat(5_000)
    assert env.sleeps == []


# -- concurrency -----------------------------------------------------------------------------------------------------
async def test_redeem_polls_every_250_ms_then_503_while_another_request_holds_the_claim(env: Env) -> None:
    token = env.token(5)
    decoded = env.codec.decode_token(token)
    await env.redemptions.claim(
        NewRedemption(
            token_hash=decoded.token_hash,
            key_hash=token_key_hash(token),
            mint_url=MINT,
            unit="sat",
            amount=5,
            fee=0,
            input_ys=(),
            now=env.clock.now(),
        )
    )

    with pytest.raises(RedemptionPendingError) as raised:
        await env.service.redeem(token, key_hash=token_key_hash(token))

    assert raised.value.retry_after_seconds == 2
    assert set(env.sleeps) == {0.25}
    assert len(env.sleeps) == int(TIMEOUT / 0.25)
    assert env.mint.count("swap") == 0


async def test_redeem_credits_once_when_ten_requests_present_one_token_concurrently(env: Env) -> None:
    token = env.token(34)
    key_hash = token_key_hash(token)

    results = await asyncio.gather(*(env.service.redeem(token, key_hash=key_hash) for _ in range(10)))

    assert {r.credited for r in results} == {Msat(34_000)}
    assert env.deposits() == [34_000]
    assert env.mint.count("swap") == 1
    await _audit(env)


# -- fees and bad input ----------------------------------------------------------------------------------------------
async def test_redeem_refuses_zero_value_after_fees_without_claiming(env: Env) -> None:
    env.mint.add_mint("http://ppk1000.test", 1000)
    env.service = RedemptionService(
        codec=env.codec,
        mint=env.mint,
        redemptions=env.redemptions,
        ledger=env.ledger,
        clock=env.clock,
        policy=MintPolicy(trusted_mints=("http://ppk1000.test",), unit="sat"),
    )
    token = env.token(1, mint="http://ppk1000.test")

    with pytest.raises(TokenZeroValueError):
        await env.service.redeem(token, key_hash=token_key_hash(token))

    assert env.redemptions.rows == {}
    assert env.mint.count("swap") == 0


async def test_redeem_refuses_fees_above_face_value_with_422_error(env: Env) -> None:
    env.mint.add_mint("http://ppk2000.test", 2000)
    env.service = RedemptionService(
        codec=env.codec,
        mint=env.mint,
        redemptions=env.redemptions,
        ledger=env.ledger,
        clock=env.clock,
        policy=MintPolicy(trusted_mints=("http://ppk2000.test",), unit="sat"),
    )
    token = env.token(1, mint="http://ppk2000.test")

    with pytest.raises(SwapFeesExceedAmountError):
        await env.service.redeem(token, key_hash=token_key_hash(token))

    assert env.redemptions.rows == {}


def _cashu_a(entries: list[dict[str, object]]) -> str:
    return "cashuA" + base64.urlsafe_b64encode(json.dumps({"token": entries, "unit": "sat"}).encode()).decode()


def _proof_json(proof: Proof) -> dict[str, object]:
    return {"amount": proof.amount, "id": proof.keyset_id, "secret": proof.secret, "C": proof.c}


def _bad_tokens(env: Env) -> dict[str, str]:
    good = env.token(8)
    a = env.mint.issue(MINT, 2).proofs[0]
    b = env.mint.issue(FEE_MINT, 2).proofs[0]
    zero = {**_proof_json(a), "amount": 0}
    negative = {**_proof_json(a), "amount": -4}
    return {
        "empty": "",
        "truncated": good[: len(good) // 2],
        "garbled": good[:20] + "!!!" + good[23:],
        "unknown prefix": "cashuZ" + good[6:],
        "no proofs": _cashu_a([{"mint": MINT, "proofs": []}]),
        "mixed mints": _cashu_a(
            [{"mint": MINT, "proofs": [_proof_json(a)]}, {"mint": FEE_MINT, "proofs": [_proof_json(b)]}]
        ),
        "zero amount": _cashu_a([{"mint": MINT, "proofs": [zero]}]),
        "negative amount": _cashu_a([{"mint": MINT, "proofs": [negative]}]),
        "duplicate proofs": _cashu_a([{"mint": MINT, "proofs": [_proof_json(a), _proof_json(a)]}]),
        "huge": "cashuA" + "A" * (101 * 1024),
        "unknown keyset": _cashu_a([{"mint": MINT, "proofs": [{**_proof_json(a), "id": "00ffffffffffffff"}]}]),
        "locked secret": _cashu_a([{"mint": MINT, "proofs": [{**_proof_json(a), "secret": '["P2PK",{"data":"02"}]'}]}]),
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "truncated",
        "garbled",
        "unknown prefix",
        "no proofs",
        "mixed mints",
        "zero amount",
        "negative amount",
        "duplicate proofs",
        "huge",
        "unknown keyset",
        "locked secret",
    ],
)
async def test_redeem_refuses_bad_token_with_400_and_consumes_nothing(env: Env, case: str) -> None:
    raw = _bad_tokens(env)[case]

    with pytest.raises(InvalidCashuTokenError):
        await env.service.redeem(raw, key_hash=token_key_hash(raw or "x"))

    assert env.redemptions.rows == {}
    assert env.mint.count("swap") == 0
    assert env.ledger.entries == []


# -- token as key ----------------------------------------------------------------------------------------------------
async def test_authenticate_redeems_unknown_token_into_key_sk_sha256_of_token(env: Env) -> None:
    accounts = AccountService(env.ledger, env.clock, env.service)
    token = env.token(16)

    caller = await accounts.authenticate(f"Bearer {token}")

    assert caller.presented_key == token_api_key(token)
    assert caller.key.key_hash == hash_api_key(token_api_key(token))
    assert caller.key.balance == Msat(16_000)


async def test_authenticate_uses_existing_token_key_without_decoding_or_calling_mint(env: Env) -> None:
    accounts = AccountService(env.ledger, env.clock, env.service)
    token = env.token(16)
    await accounts.authenticate(f"Bearer {token}")
    calls_before = list(env.mint.calls)
    env.mint.unreachable.add(MINT)

    caller = await accounts.authenticate(f"Bearer {token}")

    assert caller.key.balance == Msat(16_000)
    assert env.mint.calls == calls_before
    assert env.deposits() == [16_000]


async def test_authenticate_refuses_token_when_no_redemption_is_wired(env: Env) -> None:
    accounts = AccountService(env.ledger, env.clock)

    with pytest.raises(DomainError) as raised:
        await accounts.authenticate(f"Bearer {env.token(4)}")

    assert raised.value.code == "invalid_api_key"


# -- balance create and top-up ---------------------------------------------------------------------------------------
async def test_create_is_idempotent_per_token(env: Env) -> None:
    balances = BalanceService(env.service, env.ledger)
    token = env.token(9)

    first = await balances.create(token)
    second = await balances.create(token)

    assert first.api_key == second.api_key == token_api_key(token)
    assert second.key.balance == Msat(9_000)
    assert env.deposits() == [9_000]


async def test_topup_credits_billing_key_of_same_mint(env: Env) -> None:
    balances = BalanceService(env.service, env.ledger)
    created = await balances.create(env.token(9))

    credited = await balances.topup(created.key, env.token(3))

    assert credited == Msat(3_000)
    assert env.ledger.keys[created.key.key_hash].balance == Msat(12_000)
    await _audit(env)


async def test_topup_refuses_token_of_other_mint_with_mint_mismatch(env: Env) -> None:
    balances = BalanceService(env.service, env.ledger)
    created = await balances.create(env.token(9))

    with pytest.raises(MintMismatchError):
        await balances.topup(created.key, env.token(3, mint=FEE_MINT))

    assert env.deposits() == [9_000]


@pytest.mark.parametrize("raw", ["", "cashu", "sk-0123456789abcdef", "xcashuBsomethinglong"])
async def test_topup_refuses_values_that_are_not_tokens(env: Env, raw: str) -> None:
    balances = BalanceService(env.service, env.ledger)
    created = await balances.create(env.token(9))

    with pytest.raises(InvalidRequestError):
        await balances.topup(created.key, raw)

    assert env.mint.count("swap") == 1
