"""The `routstr` command: serve, migrate, keys create|list, audit."""

import argparse
import asyncio
import secrets
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

import uvicorn

from app.adapters.sql import SqlDatabase, SqlLedger, SqlLedgerAudit, migrate
from app.domain.accounts import KEY_PREFIX, ApiKey, LimitReset, NewApiKey, hash_api_key
from app.domain.money import Msat
from app.infrastructure.settings import Settings, SettingsError, load_settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_SETTINGS = 2
APP_FACTORY = "app.infrastructure.app:create_app_from_env"
LIST_PAGE = 500


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _err(line: str) -> None:
    sys.stderr.write(f"routstr: {line}\n")
    sys.stderr.flush()


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        msg = f"must be at least 0: {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="routstr", description="A Routstr node: pay-per-request AI paid with Cashu.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="migrate the database, then serve HTTP on HOST:PORT with WORKERS processes")
    commands.add_parser("migrate", help="upgrade the database schema to the newest revision")
    commands.add_parser("audit", help="check the ledger invariants; exits 1 on any violation")
    keys = commands.add_parser("keys", help="operator-issued API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a key funded by an operator grant; prints the key once")
    create.add_argument("--balance-sat", type=_non_negative, required=True, metavar="N")
    create.add_argument("--expires-at", type=_non_negative, metavar="UNIX", help="expiry, Unix seconds")
    create.add_argument("--refund-address", metavar="ADDR", help="Lightning address or LNURL for expiry refunds")
    create.add_argument("--balance-limit-msat", type=_non_negative, metavar="M")
    create.add_argument("--balance-limit-reset", choices=[r.value for r in LimitReset])
    keys.add_parser("list", help="key ids, balances and expiry (never the keys)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "balance_limit_reset", None) and args.balance_limit_msat is None:
        parser.error("--balance-limit-reset needs --balance-limit-msat")
    try:
        settings = load_settings()
    except SettingsError as exc:
        _err(str(exc))
        return EXIT_BAD_SETTINGS
    if args.command == "serve":
        return _serve(settings)
    return asyncio.run(_run(settings, args))


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    if not await _migrate(settings):
        return EXIT_FAILED
    if args.command == "migrate":
        _out("database is at the newest schema revision")
        return EXIT_OK
    database = SqlDatabase.create(settings.database_url, pool_size=1, max_overflow=0)
    try:
        if args.command == "audit":
            return await _audit(database)
        if args.keys_command == "create":
            return await _create_key(database, args)
        return await _list_keys(database)
    finally:
        await database.dispose()


async def _migrate(settings: Settings) -> bool:
    """Upgrade under the migration lock; a failure is reported and nothing is stamped."""
    try:
        await migrate(settings.database_url)
    except Exception as exc:  # any failure stops the command with one line, never a traceback
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        _err(f"migration failed: {type(exc).__name__}: {first_line}")
        return False
    return True


def _serve(settings: Settings) -> int:
    if not asyncio.run(_migrate(settings)):
        return EXIT_FAILED
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,  # the app configures structlog JSON logging itself
        proxy_headers=True,
    )
    return EXIT_OK


async def _audit(database: SqlDatabase) -> int:
    violations = await SqlLedgerAudit(database).violations()
    for violation in violations:
        _out(violation)
    if violations:
        _err(f"{len(violations)} ledger invariant violation(s)")
        return EXIT_FAILED
    _out("ledger invariants hold")
    return EXIT_OK


async def _create_key(database: SqlDatabase, args: argparse.Namespace) -> int:
    key = KEY_PREFIX + secrets.token_hex(32)
    limit = args.balance_limit_msat
    reset = args.balance_limit_reset
    new = NewApiKey(
        key_hash=hash_api_key(key),
        grant=Msat.from_sat(args.balance_sat),
        created_at=datetime.now(UTC),
        expires_at=None if args.expires_at is None else datetime.fromtimestamp(args.expires_at, UTC),
        refund_address=args.refund_address,
        balance_limit=None if limit is None else Msat(limit),
        balance_limit_reset=None if reset is None else LimitReset(reset),
    )
    created = await SqlLedger(database).create_key(new)
    _out(key)  # shown once: only its sha256 is stored
    sys.stderr.write(f"key_id={created.key_id} balance_msat={created.balance.value}\n")
    return EXIT_OK


def _describe(key: ApiKey) -> str:
    expires = "-" if key.expires_at is None else str(int(key.expires_at.timestamp()))
    parent = "-" if key.parent_key_hash is None else key.parent_key_hash[:8]
    return (
        f"{key.key_id}\t{key.balance.value}\t{key.reserved.value}\t{key.total_spent.value}\t{key.total_requests}"
        f"\t{expires}\t{parent}"
    )


async def _list_keys(database: SqlDatabase) -> int:
    ledger = SqlLedger(database)
    _out("key_id\tbalance_msat\treserved_msat\ttotal_spent_msat\ttotal_requests\texpires_at\tparent")
    offset = 0
    while page := await ledger.list_keys(limit=LIST_PAGE, offset=offset):
        for key in page:
            _out(_describe(key))
        offset += len(page)
    return EXIT_OK
