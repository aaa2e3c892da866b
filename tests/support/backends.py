"""Backends the integration suite needs: skip with a reason when absent, fail under REQUIRE_ALL_BACKENDS=1."""

import os
import socket

import pytest

REQUIRE_ALL_BACKENDS = os.environ.get("REQUIRE_ALL_BACKENDS") == "1"  # noqa: TID251 - test-run switch, not app config


def backend_missing(name: str, reason: str) -> None:
    """Skip the test (or fail it under REQUIRE_ALL_BACKENDS=1) because `name` is not available."""
    message = f"{name} unavailable: {reason}"
    if REQUIRE_ALL_BACKENDS:
        pytest.fail(f"{message} (REQUIRE_ALL_BACKENDS=1)")
    pytest.skip(message)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
