"""The `routstr` command run as a real subprocess against a temporary SQLite database."""

import hashlib
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from app.infrastructure.cli import EXIT_BAD_SETTINGS
from tests.support.backends import free_port

ROOT = Path(__file__).resolve().parents[3]
ROUTSTR = ROOT / ".venv" / "bin" / "routstr"
KEY_LINE_LENGTH = len("sk-") + 64


@pytest.fixture
def db_url(tmp_path: Path, audited_urls: list[str]) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    audited_urls.append(url)
    return url


def _env(db_url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": db_url,
        "CASHU_MINTS": "http://127.0.0.1:3338",
        "BTC_USD_PRICE": "100000",
        "RELAYS": "ws://127.0.0.1:9",
        "PROVIDERS_REFRESH_INTERVAL_SECONDS": "0",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def _routstr(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own console script with fixed arguments
        [str(ROUTSTR), *args], env=env, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


def test_migrate_creates_schema_and_is_idempotent(db_url: str) -> None:
    first = _routstr(_env(db_url), "migrate")
    second = _routstr(_env(db_url), "migrate")

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert "newest schema revision" in second.stdout


def test_keys_create_prints_key_stored_only_as_hash_and_journals_grant(db_url: str) -> None:
    created = _routstr(_env(db_url), "keys", "create", "--balance-sat", "21", "--expires-at", "4102444800")

    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("sk-")
    assert len(key) == KEY_LINE_LENGTH
    key_hash = hashlib.sha256(key.encode()).hexdigest()
    main_file = Path(db_url.removeprefix("sqlite+aiosqlite:///"))
    stored = b"".join(p.read_bytes() for p in main_file.parent.glob(main_file.name + "*"))  # db, -wal, -shm
    assert key_hash.encode() in stored
    assert key.removeprefix("sk-").encode() not in stored
    listed = _routstr(_env(db_url), "keys", "list")
    assert listed.returncode == 0, listed.stderr
    assert key not in listed.stdout
    assert key.removeprefix("sk-")[:16] not in listed.stdout
    row = next(line for line in listed.stdout.splitlines() if line.startswith(key_hash[:8]))
    assert row.split("\t")[1:3] == ["21000", "0"]
    assert row.split("\t")[5] == "4102444800"


def test_keys_create_accepts_balance_limit(db_url: str) -> None:
    created = _routstr(
        _env(db_url),
        "keys",
        "create",
        "--balance-sat",
        "5",
        "--refund-address",
        "user@example.com",
        "--balance-limit-msat",
        "1000",
        "--balance-limit-reset",
        "weekly",
    )

    assert created.returncode == 0, created.stderr


def test_keys_create_exits_2_when_limit_reset_lacks_limit(tmp_path: Path) -> None:
    result = _routstr(
        _env(f"sqlite+aiosqlite:///{tmp_path / 'never.db'}"),
        "keys",
        "create",
        "--balance-sat",
        "5",
        "--balance-limit-reset",
        "daily",
    )

    assert result.returncode == 2
    assert "--balance-limit-msat" in result.stderr


def test_audit_exits_0_when_invariants_hold(db_url: str) -> None:
    _routstr(_env(db_url), "keys", "create", "--balance-sat", "3")

    result = _routstr(_env(db_url), "audit")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "invariants hold" in result.stdout


def test_audit_exits_1_when_balance_differs_from_journal(db_url: str, audited_urls: list[str]) -> None:
    _routstr(_env(db_url), "keys", "create", "--balance-sat", "3")
    audited_urls.remove(db_url)  # this test corrupts the database on purpose
    with closing(sqlite3.connect(db_url.removeprefix("sqlite+aiosqlite:///"))) as db:
        db.execute("UPDATE api_keys SET balance_msat = balance_msat + 1")
        db.commit()

    result = _routstr(_env(db_url), "audit")

    assert result.returncode == 1
    assert "invariant 1" in result.stdout


def test_bad_setting_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    result = _routstr(_env(f"sqlite+aiosqlite:///{tmp_path / 'never.db'}", PORT="not-a-port"), "migrate")

    assert result.returncode == EXIT_BAD_SETTINGS
    assert result.stderr.strip().count("\n") == 0
    assert "PORT" in result.stderr


def test_migrate_exits_1_without_traceback_when_database_is_unreachable(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'x.db'}"

    result = _routstr(_env(url), "migrate")

    assert result.returncode == 1
    assert "migration failed" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [[str(ROUTSTR), "serve"], [sys.executable, "-m", "app"]])
def test_serve_migrates_and_answers_health(db_url: str, command: list[str]) -> None:
    port = free_port()
    env = _env(db_url, HOST="127.0.0.1", PORT=str(port))
    server = subprocess.Popen(  # noqa: S603 - our own entry points
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        status = _poll_health(port, server)
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)

    assert status == 200, stderr
    assert server.returncode is not None


def _poll_health(port: int, server: subprocess.Popen[str]) -> int | None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.poll() is None:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
        except httpx.TransportError:
            time.sleep(0.2)
            continue
        if response.status_code == 200:
            return 200
        time.sleep(0.2)
    return None


def test_serve_exits_1_and_stamps_nothing_when_migration_fails(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    with closing(sqlite3.connect(path)) as db:  # a conflicting table makes the initial revision fail midway
        db.execute("CREATE TABLE reservations (x)")
    env = _env(f"sqlite+aiosqlite:///{path}", HOST="127.0.0.1", PORT=str(free_port()))

    result = _routstr(env, "serve")

    assert result.returncode == 1
    assert "migration failed" in result.stderr
    with closing(sqlite3.connect(path)) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert tables == ["reservations"]
