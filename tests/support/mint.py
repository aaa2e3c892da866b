"""A real nutshell FakeWallet mint as a subprocess (SPEC §17), and session fixtures for a trusted and a fee mint.

Use the fixtures by importing them into a conftest: `from tests.support.mint import trusted_mint, untrusted_mint`.
"""

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.backends import backend_missing, free_port

ROOT = Path(__file__).resolve().parents[2]
MINT_VENV = ROOT / ".venv-mint"
MINT_PYTHON = MINT_VENV / "bin" / "python"
STARTUP_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0


@dataclass
class RunningMint:
    """A started mint: its URL, the private key it derives keysets from and its throwaway directory."""

    url: str
    port: int
    private_key: str
    input_fee_ppk: int
    directory: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def log_path(self) -> Path:
        return self.directory / "mint.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGINT first (uvicorn shuts down cleanly), then SIGKILL if it lingers; removes the directory."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        shutil.rmtree(self.directory, ignore_errors=True)


def mint_available() -> str | None:
    """None when the mint venv is usable, otherwise why not."""
    if not MINT_PYTHON.exists():
        return f"{MINT_VENV} is missing (run `make setup`)"
    return None


def mint_environment(directory: Path, port: int, private_key: str, input_fee_ppk: int) -> dict[str, str]:
    """Exactly the SPEC §17 environment, plus PATH; nothing of the test process leaks into the mint."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),  # noqa: TID251 - test harness, not app config
        "HOME": str(directory),
        "MINT_BACKEND_BOLT11_SAT": "FakeWallet",
        "MINT_LISTEN_HOST": "127.0.0.1",
        "MINT_LISTEN_PORT": str(port),
        "MINT_PRIVATE_KEY": private_key,
        "MINT_RATE_LIMIT": "FALSE",
        "MINT_INPUT_FEE_PPK": str(input_fee_ppk),
        "FAKEWALLET_DELAY_INCOMING_PAYMENT": "0",
        "FAKEWALLET_DELAY_OUTGOING_PAYMENT": "0",
        "MINT_DATABASE": str(directory / "mint"),
        "MINT_AUTH_DATABASE": str(directory / "auth"),
        "CASHU_DIR": str(directory / "cashu"),
    }


def start_mint(*, input_fee_ppk: int = 0, timeout: float = STARTUP_TIMEOUT_SECONDS) -> RunningMint:
    """Start `python -m cashu.mint` from `.venv-mint` and wait until `/v1/info` answers.

    Raises RuntimeError (with the mint's log tail) when the venv is missing or the mint does not come up.
    """
    missing = mint_available()
    if missing is not None:
        raise RuntimeError(missing)
    directory = Path(tempfile.mkdtemp(prefix="routstr-mint-"))
    port = free_port()
    private_key = secrets.token_hex(16)
    log_file = (directory / "mint.log").open("wb")
    process = subprocess.Popen(  # noqa: S603 - fixed interpreter and module
        [str(MINT_PYTHON), "-m", "cashu.mint"],
        cwd=directory,
        env=mint_environment(directory, port, private_key, input_fee_ppk),
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    log_file.close()
    mint = RunningMint(
        url=f"http://127.0.0.1:{port}",
        port=port,
        private_key=private_key,
        input_fee_ppk=input_fee_ppk,
        directory=directory,
        process=process,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = mint.log_tail()
            mint.stop()
            msg = f"nutshell mint exited with {process.returncode}:\n{tail}"
            raise RuntimeError(msg)
        try:
            if httpx.get(f"{mint.url}/v1/info", timeout=1.0).status_code == httpx.codes.OK:
                return mint
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    tail = mint.log_tail()
    mint.stop()
    msg = f"nutshell mint did not answer /v1/info within {timeout:.0f} s:\n{tail}"
    raise RuntimeError(msg)


def _mint_fixture(input_fee_ppk: int) -> Iterator[RunningMint]:
    missing = mint_available()
    if missing is not None:
        backend_missing("mint", missing)
    mint = start_mint(input_fee_ppk=input_fee_ppk)
    try:
        yield mint
    finally:
        mint.stop()


@pytest.fixture(scope="session")
def trusted_mint() -> Iterator[RunningMint]:
    """A fee-free FakeWallet mint (the node's trusted/primary mint in tests)."""
    yield from _mint_fixture(0)


@pytest.fixture(scope="session")
def untrusted_mint() -> Iterator[RunningMint]:
    """A second FakeWallet mint charging `MINT_INPUT_FEE_PPK=100` (not in CASHU_MINTS unless a test adds it)."""
    yield from _mint_fixture(100)
