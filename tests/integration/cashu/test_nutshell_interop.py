"""Our codecs and HttpCashuMint against a real nutshell FakeWallet mint and wallet (SPEC §18 interop)."""

import asyncio

import pytest

from app.adapters.cashu import crypto
from app.domain.cashu import PaymentRequest, Proof, ProofStateKind, QuoteState, Token
from app.domain.errors import InvalidCashuTokenError, MintError, TokenAlreadySpentError
from app.domain.ports import Mint, TokenCodec
from tests.support.backends import backend_missing
from tests.support.mint import RunningMint, mint_available
from tests.support.nutshell import NutshellWallet, nutshell_decode_payment_request

pytestmark = pytest.mark.mint


async def _redeem(mint_client: Mint, codec: TokenCodec, raw: str) -> tuple[Token, list[Proof], int]:
    """Swap a token into fresh outputs of ours; returns the token, the new proofs and the fee paid."""
    token = codec.decode_token(raw)
    fee = await mint_client.input_fee(token.mint, token.proofs)
    outputs = await mint_client.prepare_outputs(token.mint, token.unit, token.amount - fee)
    proofs = list(await mint_client.swap(token.mint, token.proofs, outputs))
    return token, proofs, fee


def _dleq_verifies(proof: Proof, mint_key: str) -> bool:
    assert proof.dleq is not None
    assert proof.dleq.r is not None
    return crypto.verify_proof_dleq(
        mint_key=mint_key, secret=proof.secret, c=proof.c, e=proof.dleq.e, s=proof.dleq.s, r=proof.dleq.r
    )


async def test_nutshell_tokens_decode_with_our_codec(
    wallet: NutshellWallet, trusted_mint: RunningMint, token_codec: TokenCodec
) -> None:
    await wallet.mint(64)
    sent_b = await wallet.send(21)
    sent_a = await wallet.send(13, legacy=True, dleq=True)

    token_b = token_codec.decode_token(sent_b.token)
    token_a = token_codec.decode_token(sent_a.token)

    assert sent_b.token.startswith("cashuB")
    assert sent_a.token.startswith("cashuA")
    assert (token_b.mint, token_b.unit, token_b.amount) == (trusted_mint.url, "sat", sent_b.amount)
    assert (token_a.mint, token_a.unit, token_a.amount) == (trusted_mint.url, "sat", sent_a.amount)
    assert all(p.dleq is not None and p.dleq.r is not None for p in token_a.proofs)


async def test_keysets_are_fetched_with_fees_and_verified_ids(
    mint_client: Mint, trusted_mint: RunningMint, untrusted_mint: RunningMint
) -> None:
    free = [k for k in await mint_client.keysets(trusted_mint.url) if k.active and k.unit == "sat"]
    paid = [k for k in await mint_client.keysets(untrusted_mint.url) if k.active and k.unit == "sat"]

    assert [k.input_fee_ppk for k in free] == [0]
    assert [k.input_fee_ppk for k in paid] == [100]
    assert free[0].id.startswith("01")
    assert {1, 2, 4, 1024} <= set(free[0].keys)
    assert crypto.keyset_id_matches(free[0].id, free[0].keys, "sat", 0, free[0].final_expiry)


async def test_info_lists_the_nuts_the_node_relies_on(mint_client: Mint, trusted_mint: RunningMint) -> None:
    info = await mint_client.info(trusted_mint.url)

    assert {4, 5, 7, 9, 12} <= info.nuts
    assert info.version is not None
    assert info.version.startswith("Nutshell/")


async def test_swap_turns_a_nutshell_token_into_our_verified_proofs(
    wallet: NutshellWallet, mint_client: Mint, token_codec: TokenCodec
) -> None:
    await wallet.mint(50)
    sent = await wallet.send(37)

    token, proofs, fee = await _redeem(mint_client, token_codec, sent.token)

    assert fee == 0
    assert sum(p.amount for p in proofs) == token.amount == sent.amount
    keyset = next(k for k in await mint_client.keysets(token.mint) if k.id == proofs[0].keyset_id)
    assert all(_dleq_verifies(p, keyset.keys[p.amount]) for p in proofs)
    input_states = await mint_client.check_state(token.mint, mint_client.proof_ys(token.proofs))
    output_states = await mint_client.check_state(token.mint, mint_client.proof_ys(proofs))
    assert {s.state for s in input_states} == {ProofStateKind.SPENT}
    assert {s.state for s in output_states} == {ProofStateKind.UNSPENT}


async def test_swap_raises_already_spent_when_the_token_is_presented_again(
    wallet: NutshellWallet, mint_client: Mint, token_codec: TokenCodec
) -> None:
    await wallet.mint(8)
    sent = await wallet.send(8)
    token, _, _ = await _redeem(mint_client, token_codec, sent.token)
    outputs = await mint_client.prepare_outputs(token.mint, token.unit, token.amount)

    with pytest.raises(TokenAlreadySpentError):
        await mint_client.swap(token.mint, token.proofs, outputs)


async def test_token_from_our_proofs_is_received_by_nutshell_with_the_exact_amount(
    wallet: NutshellWallet,
    trusted_mint: RunningMint,
    mint_client: Mint,
    token_codec: TokenCodec,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    await wallet.mint(40)
    _, proofs, _ = await _redeem(mint_client, token_codec, (await wallet.send(29)).token)
    ours = token_codec.encode_token(Token(mint=trusted_mint.url, unit="sat", proofs=tuple(proofs)))
    receiver = NutshellWallet(trusted_mint.url, tmp_path_factory.mktemp("receiver"))

    received = await receiver.receive(ours)

    assert ours.startswith("cashuB")
    assert received == 29
    assert await receiver.balance() == 29


async def test_restore_returns_the_proofs_of_outputs_the_mint_signed(
    wallet: NutshellWallet, mint_client: Mint, token_codec: TokenCodec
) -> None:
    await wallet.mint(16)
    token = token_codec.decode_token((await wallet.send(11)).token)
    outputs = await mint_client.prepare_outputs(token.mint, token.unit, token.amount)
    unsigned = await mint_client.prepare_outputs(token.mint, token.unit, 3)
    swapped = await mint_client.swap(token.mint, token.proofs, outputs)

    restored = await mint_client.restore(token.mint, [*outputs, *unsigned])

    assert [(p.secret, p.c, p.amount) for p in restored] == [(p.secret, p.c, p.amount) for p in swapped]


async def test_fee_mint_charges_exactly_the_fee_we_compute(
    fee_wallet: NutshellWallet, untrusted_mint: RunningMint, mint_client: Mint, token_codec: TokenCodec
) -> None:
    await fee_wallet.mint(100)
    token = token_codec.decode_token((await fee_wallet.send(63)).token)
    fee = await mint_client.input_fee(untrusted_mint.url, token.proofs)
    greedy = await mint_client.prepare_outputs(token.mint, token.unit, token.amount - fee + 1)

    with pytest.raises(MintError):  # one unit more than amount - fee is refused as unbalanced
        await mint_client.swap(token.mint, token.proofs, greedy)
    outputs = await mint_client.prepare_outputs(token.mint, token.unit, token.amount - fee)
    proofs = await mint_client.swap(token.mint, token.proofs, outputs)

    assert fee == -(-len(token.proofs) * 100 // 1000)
    assert fee >= 1
    assert sum(p.amount for p in proofs) == token.amount - fee


async def test_input_fee_rejects_a_keyset_the_mint_does_not_know(trusted_mint: RunningMint, mint_client: Mint) -> None:
    stranger = Proof(
        amount=1, keyset_id="01ffffffffffffff", secret="x" * 64, c=crypto.point_hex(crypto.hash_to_curve(b"c"))
    )

    with pytest.raises(InvalidCashuTokenError):
        await mint_client.input_fee(trusted_mint.url, [stranger])


async def _mint_paid(mint_client: Mint, url: str, amount: int) -> list[Proof]:
    quote = await mint_client.create_mint_quote(url, "sat", amount)
    for _ in range(50):
        if (await mint_client.get_mint_quote(url, quote.quote_id)).state is QuoteState.PAID:
            break
        await asyncio.sleep(0.1)
    return list(await mint_client.mint(url, quote.quote_id, await mint_client.prepare_outputs(url, "sat", amount)))


async def test_bolt11_mint_and_melt_round_trip_with_fakewallet(
    trusted_mint: RunningMint, untrusted_mint: RunningMint, mint_client: Mint
) -> None:
    url = trusted_mint.url
    # FakeWallet marks its own invoices paid at once, so pay one issued by the other mint.
    invoice = (await mint_client.create_mint_quote(untrusted_mint.url, "sat", 10)).request
    melt_quote = await mint_client.create_melt_quote(url, "sat", invoice)
    proofs = await _mint_paid(mint_client, url, melt_quote.amount + melt_quote.fee_reserve)
    blanks = await mint_client.blank_outputs(url, "sat", melt_quote.fee_reserve)

    result = await mint_client.melt(url, melt_quote.quote_id, proofs, blanks)

    assert melt_quote.amount == 10
    assert result.quote.state is QuoteState.PAID
    assert sum(p.amount for p in result.change) <= melt_quote.fee_reserve
    states = await mint_client.check_state(url, mint_client.proof_ys(proofs))
    assert {s.state for s in states} == {ProofStateKind.SPENT}
    assert (await mint_client.get_melt_quote(url, melt_quote.quote_id)).quote.state is QuoteState.PAID


async def test_nutshell_decodes_our_payment_request(token_codec: TokenCodec) -> None:
    missing = mint_available()
    if missing is not None:
        backend_missing("mint", missing)
    ours = PaymentRequest(
        amount=21,
        unit="sat",
        mints=("http://primary.test", "http://other.test"),
        single_use=True,
        description="routstr m",
    )

    decoded = await nutshell_decode_payment_request(token_codec.encode_payment_request(ours))

    assert decoded == {
        "i": None,
        "a": 21,
        "u": "sat",
        "s": True,
        "m": ["http://primary.test", "http://other.test"],
        "d": "routstr m",
        "t": None,
    }
