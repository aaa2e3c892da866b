"""Cashu integration fixtures: the session's nutshell mints, our HTTP mint client and fresh nutshell wallets."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.adapters.cashu.codec import CashuTokenCodec
from app.adapters.cashu.mint import HttpCashuMint
from app.domain.ports import Mint, TokenCodec
from tests.support.mint import RunningMint, trusted_mint, untrusted_mint
from tests.support.nutshell import NutshellWallet

__all__ = ["trusted_mint", "untrusted_mint"]


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0)) as client:
        yield client


@pytest.fixture
def mint_client(http_client: httpx.AsyncClient) -> Mint:
    return HttpCashuMint(http_client, timeout_seconds=30.0, max_concurrency=4, retry_max_attempts=3)


@pytest.fixture
def token_codec() -> TokenCodec:
    return CashuTokenCodec()


@pytest.fixture
def wallet(trusted_mint: RunningMint, tmp_path: Path) -> NutshellWallet:
    """A fresh nutshell wallet at the fee-free mint."""
    return NutshellWallet(trusted_mint.url, tmp_path / "wallet")


@pytest.fixture
def fee_wallet(untrusted_mint: RunningMint, tmp_path: Path) -> NutshellWallet:
    """A fresh nutshell wallet at the mint charging 100 ppk per input."""
    return NutshellWallet(untrusted_mint.url, tmp_path / "fee-wallet")
