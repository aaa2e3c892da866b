"""Typed async wrapper around `scripts/nutshell_wallet.py`: a real nutshell wallet as the node's interop peer."""

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from tests.support.mint import MINT_PYTHON, ROOT

SCRIPT = ROOT / "scripts" / "nutshell_wallet.py"
CALL_TIMEOUT_SECONDS = 120.0


class NutshellWalletError(RuntimeError):
    """The wallet script failed; the message is its JSON error (never a token)."""


@dataclass(frozen=True)
class SentToken:
    token: str
    amount: int
    fees: int


@dataclass(frozen=True)
class NutshellWallet:
    """One wallet directory bound to one mint. Each call runs the script once (about 2 s: nutshell imports)."""

    mint_url: str
    directory: Path
    unit: str = "sat"

    async def _run(self, *args: str) -> dict[str, object]:
        process = await asyncio.create_subprocess_exec(
            str(MINT_PYTHON),
            str(SCRIPT),
            "--mint",
            self.mint_url,
            "--dir",
            str(self.directory),
            "--unit",
            self.unit,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), CALL_TIMEOUT_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
            msg = f"nutshell wallet {args[0]} timed out"
            raise NutshellWalletError(msg) from None
        lines = stdout.decode().strip().splitlines()
        try:
            result = json.loads(lines[-1]) if lines else {}
        except ValueError:
            result = {}
        if process.returncode != 0 or not isinstance(result, dict) or "error" in result:
            error = result.get("error") if isinstance(result, dict) else None
            msg = f"nutshell wallet {args[0]} failed: {error or stderr.decode()[-2000:]}"
            raise NutshellWalletError(msg)
        return result

    async def mint(self, amount: int) -> int:
        """Mint `amount` units through the FakeWallet backend; returns the new balance."""
        return _int(await self._run("mint", str(amount)), "balance")

    async def send(self, amount: int, *, legacy: bool = False, dleq: bool = False) -> SentToken:
        """A token worth at least `amount` (exactly, when the wallet holds matching proofs); cashuB unless `legacy`."""
        flags = [*(["--legacy"] if legacy else []), *(["--dleq"] if dleq else [])]
        result = await self._run("send", str(amount), *flags)
        token = result.get("token")
        if not isinstance(token, str):
            msg = "nutshell wallet send returned no token"
            raise NutshellWalletError(msg)
        return SentToken(token=token, amount=_int(result, "amount"), fees=_int(result, "fees"))

    async def receive(self, token: str) -> int:
        """Swap `token` into the wallet; returns the amount credited (face value minus the mint's input fee)."""
        return _int(await self._run("receive", token), "amount")

    async def balance(self) -> int:
        return _int(await self._run("balance"), "balance")


def _int(result: dict[str, object], key: str) -> int:
    value = result.get(key)
    if type(value) is not int:
        msg = f"nutshell wallet reply has no integer {key!r}"
        raise NutshellWalletError(msg)
    return value


async def nutshell_decode_payment_request(request: str) -> dict[str, object]:
    """Decode a `creqA` request with nutshell's own NUT-18 code; returns its fields `i a u s m d t`."""
    process = await asyncio.create_subprocess_exec(
        str(MINT_PYTHON),
        str(SCRIPT),
        "decode-request",
        request,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), CALL_TIMEOUT_SECONDS)
    lines = stdout.decode().strip().splitlines()
    result = json.loads(lines[-1]) if lines else {}
    if process.returncode != 0 or not isinstance(result, dict) or "error" in result:
        msg = f"nutshell could not decode the payment request: {result or stderr.decode()[-2000:]}"
        raise NutshellWalletError(msg)
    return result
