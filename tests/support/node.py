"""Serve the real app with uvicorn on a loopback port in a background thread, and fund keys in its database."""

import asyncio
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn

from app.adapters.sql import SqlDatabase, SqlLedger
from app.domain.accounts import ApiKey, NewApiKey, Reservation, Settlement, hash_api_key
from app.domain.money import Msat
from app.infrastructure.app import create_app
from app.infrastructure.settings import Settings, load_settings


def node_settings(database_url: str, upstream_base_url: str, **extra: str) -> Settings:
    env = {
        "DATABASE_URL": database_url,
        "UPSTREAM_BASE_URL": upstream_base_url,
        "CASHU_MINTS": "http://127.0.0.1:3338",
        "BTC_USD_PRICE": "100000",
        "MODELS_REFRESH_INTERVAL_SECONDS": "0",
        "RELAYS": "ws://127.0.0.1:1",
        **extra,
    }
    return load_settings(env)


@dataclass
class ServedNode:
    """The app behind uvicorn on 127.0.0.1:<port>, on its own thread and event loop."""

    settings: Settings
    host: str = "127.0.0.1"
    port: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    keys: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> "ServedNode":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        app = create_app(self.settings)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                msg = "node did not start"
                raise RuntimeError(msg)
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)

    def __enter__(self) -> "ServedNode":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _run(coro: "asyncio.Future[object] | object") -> object:
    result: list[object] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))  # type: ignore[arg-type]  # a coroutine
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


class LedgerProbe:
    """Reads and funds keys in a node's database from the test thread (its own loop and engine)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    async def _with_ledger(self, action: str, *args: object) -> object:
        database = SqlDatabase.create(self.database_url, pool_size=1, max_overflow=0)
        try:
            ledger = SqlLedger(database)
            method = getattr(ledger, action)
            return await method(*args)
        finally:
            await database.dispose()

    def create_key(self, balance_msat: int) -> str:
        """A new operator-issued key (`grant`) holding `balance_msat`; returns the key string."""
        key = "sk-" + secrets.token_hex(32)
        new = NewApiKey(key_hash=hash_api_key(key), grant=Msat(balance_msat), created_at=datetime.now(UTC))
        _run(self._with_ledger("create_key", new))
        return key

    def key(self, key: str) -> ApiKey:
        found = _run(self._with_ledger("get_key", hash_api_key(key)))
        assert isinstance(found, ApiKey)
        return found

    def reservation(self, request_id: str) -> Reservation | None:
        found = _run(self._with_ledger("get_reservation", request_id))
        assert found is None or isinstance(found, Reservation)
        return found

    def settle(self, request_id: str, charge_msat: int) -> Settlement:
        """Settle a reservation as a late, surviving request would."""
        found = _run(self._with_ledger("settle", request_id, Msat(charge_msat), datetime.now(UTC)))
        assert isinstance(found, Settlement)
        return found

    def entries(self, key: str) -> list[object]:
        found = _run(self._with_ledger("entries_for_key", hash_api_key(key)))
        assert isinstance(found, list | tuple)
        return list(found)


def node_environment(database_url: str, upstream_base_url: str, **extra: str) -> dict[str, str]:
    """The environment of a node process (the same defaults as `node_settings`)."""
    return {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "DATABASE_URL": database_url,
        "UPSTREAM_BASE_URL": upstream_base_url,
        "CASHU_MINTS": "http://127.0.0.1:3338",
        "BTC_USD_PRICE": "100000",
        "MODELS_REFRESH_INTERVAL_SECONDS": "0",
        "RELAYS": "ws://127.0.0.1:1",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


@dataclass
class NodeProcess:
    """A node in its own process (`uvicorn --factory … create_app_from_env`) on a loopback port."""

    env: dict[str, str]
    port: int = 0
    process: "subprocess.Popen[bytes] | None" = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "NodeProcess":
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        command = [sys.executable, "-m", "uvicorn", "--factory", "app.infrastructure.app:create_app_from_env"]
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [*command, "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log"], env=self.env
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    msg = "node process did not start"
                    raise RuntimeError(msg) from None
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "NodeProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def headers_of(mapping: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in mapping.items()}


def extra(model: object) -> dict[str, Any]:
    """The fields an `openai` response object carries beyond its schema (`usage.cost`, `cost_sats`…)."""
    value = getattr(model, "model_extra", None)
    assert isinstance(value, dict), f"no extra fields on {model!r}"
    return value
