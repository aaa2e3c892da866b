"""A real Nostr relay on loopback: the `nostr-relay` package as a subprocess with SQLite storage in a temp dir.

Signature checks are switched off in the relay on purpose, so tests can store forged events and prove the node
drops them itself.
"""

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.backends import backend_missing, free_port, port_open

STARTUP_SECONDS = 30.0

_CONFIG = """\
DEBUG: false
relay_name: routstr test relay
relay_description: loopback relay started by the test suite
storage:
  sqlalchemy.url: sqlite+aiosqlite:///{db}
  num_concurrent_reqs: 4
  num_concurrent_adds: 1
  validators:
    - nostr_relay.validators.is_not_too_large
verification:
  nip05_verification: disabled
gunicorn:
  bind: 127.0.0.1:{port}
  workers: 1
  loglevel: warning
  reload: false
authentication:
  enabled: false
message_timeout: 1800
subscription_limit: 32
max_limit: 6000
max_event_size: 65536
oldest_event: 315360000
"""


def _relay_command() -> list[str] | None:
    local = Path(sys.executable).parent / "nostr-relay"
    if local.exists():
        return [str(local)]
    found = shutil.which("nostr-relay")
    return [found] if found else None


@contextmanager
def running_relay(directory: Path) -> Iterator[str]:
    """Start a relay, yield its `ws://127.0.0.1:<port>` URL, stop it afterwards. Skips (or fails under
    REQUIRE_ALL_BACKENDS=1) when the package is missing or the relay does not come up."""
    command = _relay_command()
    if command is None:
        backend_missing("nostr-relay", "the nostr-relay console script is not installed")
        raise AssertionError  # unreachable: backend_missing skips or fails
    port = free_port()
    config = directory / "relay.yaml"
    config.write_text(_CONFIG.format(db=directory / "relay.sqlite3", port=port))
    log_path = directory / "relay.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [*command, "-c", str(config), "serve", "--use-uvicorn"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=directory,
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not port_open("127.0.0.1", port, timeout=0.2):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                backend_missing("nostr-relay", f"relay did not start on port {port}: {tail}")
            time.sleep(0.1)
        yield f"ws://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
