"""Interop peer: a nutshell wallet driven from the command line, run under `.venv-mint/bin/python` only.

    nutshell_wallet.py [--mint URL] [--dir DIR] [--unit U] mint N | send N [--legacy] [--dleq] | receive TOKEN | balance
    nutshell_wallet.py decode-request CREQ      (NUT-18, no wallet needed)

Prints one JSON object on stdout: {"balance": n, ...}; failures print {"error": "..."} and exit 1.
`--mint` and `--dir` default to NUTSHELL_MINT_URL and NUTSHELL_WALLET_DIR. This is test tooling, never app code:
the app must not import `cashu` (SPEC §7.1).
"""

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mint", default=os.environ.get("NUTSHELL_MINT_URL"))
    parser.add_argument("--dir", default=os.environ.get("NUTSHELL_WALLET_DIR"))
    parser.add_argument("--unit", default="sat")
    commands = parser.add_subparsers(dest="command", required=True)
    mint = commands.add_parser("mint", help="mint N units through the FakeWallet backend")
    mint.add_argument("amount", type=int)
    send = commands.add_parser("send", help="print a token worth at least N units")
    send.add_argument("amount", type=int)
    send.add_argument("--legacy", action="store_true", help="cashuA instead of cashuB")
    send.add_argument("--dleq", action="store_true", help="include DLEQ proofs")
    receive = commands.add_parser("receive", help="swap a token into the wallet")
    receive.add_argument("token")
    commands.add_parser("balance")
    decode = commands.add_parser("decode-request", help="decode a NUT-18 payment request with nutshell")
    decode.add_argument("request")
    args = parser.parse_args(argv)
    if args.command != "decode-request" and (not args.mint or not args.dir):
        parser.error("--mint/NUTSHELL_MINT_URL and --dir/NUTSHELL_WALLET_DIR are required")
    return args


def _configure(directory: Path) -> None:
    # nutshell reads its settings from the environment at import time.
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["CASHU_DIR"] = str(directory)
    os.environ["HOME"] = str(directory)
    os.environ["TOR"] = "FALSE"
    os.environ["DEBUG"] = "FALSE"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.chdir(directory)  # nutshell also reads a .env from the working directory


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from cashu.wallet.helpers import deserialize_token_from_string, receive  # noqa: PLC0415 - after _configure
    from cashu.wallet.wallet import Wallet  # noqa: PLC0415

    wallet = await Wallet.with_db(args.mint, str(Path(args.dir) / "wallet"), name="wallet", unit=args.unit)
    await wallet.load_mint()
    await wallet.load_proofs(reload=True)
    result: dict[str, Any] = {}
    if args.command == "mint":
        quote = await wallet.request_mint(args.amount)
        for _ in range(100):
            state = await wallet.get_mint_quote(quote.quote)
            if state.state.value in {"PAID", "ISSUED"}:
                break
            await asyncio.sleep(0.1)
        proofs = await wallet.mint(args.amount, quote_id=quote.quote)
        result["amount"] = sum(p.amount for p in proofs)
    elif args.command == "send":
        proofs, fees = await wallet.select_to_send(wallet.proofs, args.amount, set_reserved=False)
        token = await wallet.serialize_proofs(proofs, include_dleq=args.dleq, legacy=args.legacy)
        await wallet.set_reserved_for_send(proofs, reserved=True)
        result.update(token=token, amount=sum(p.amount for p in proofs), fees=fees)
    elif args.command == "receive":
        before = wallet.available_balance.amount
        await receive(wallet, deserialize_token_from_string(args.token.strip()))
        await wallet.load_proofs(reload=True)
        result["amount"] = wallet.available_balance.amount - before
    await wallet.load_proofs(reload=True)
    result["balance"] = wallet.available_balance.amount
    return result


def _decode_request(raw: str) -> dict[str, Any]:
    from cashu.core.nuts.nut18 import deserialize  # noqa: PLC0415 - after _configure

    request = deserialize(raw)
    return {
        "i": request.i,
        "a": request.a,
        "u": request.u,
        "s": request.s,
        "m": request.m,
        "d": request.d,
        "t": None if request.t is None else [t.model_dump() for t in request.t],
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    stdout = sys.stdout
    try:
        # nutshell prints progress ("Received 5 sat") to stdout; keep stdout for our JSON alone.
        with contextlib.redirect_stdout(sys.stderr):
            if args.command == "decode-request":
                _configure(Path(tempfile.mkdtemp(prefix="nutshell-")))
                result = _decode_request(args.request)
            else:
                _configure(Path(args.dir).resolve())
                result = asyncio.run(_run(args))
    except Exception as exc:  # every failure becomes a JSON error for the caller
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), file=stdout)
        return 1
    print(json.dumps(result), file=stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
