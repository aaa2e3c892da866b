"""Proxy integration fixtures: the echo upstream and the node on loopback ports, a real SQLite database."""

from collections.abc import Iterator

import openai
import pytest

from tests.support.echo_upstream import EchoUpstream
from tests.support.node import LedgerProbe, ServedNode, node_settings


@pytest.fixture
def echo() -> Iterator[EchoUpstream]:
    with EchoUpstream() as upstream:
        yield upstream


@pytest.fixture
def node(sqlite_database_url: str, echo: EchoUpstream) -> Iterator[ServedNode]:
    with ServedNode(node_settings(sqlite_database_url, echo.base_url)) as served:
        yield served


@pytest.fixture
def probe(sqlite_database_url: str) -> LedgerProbe:
    return LedgerProbe(sqlite_database_url)


@pytest.fixture
def funded_key(probe: LedgerProbe) -> str:
    return probe.create_key(10_000_000)


@pytest.fixture
def client(node: ServedNode, funded_key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=node.base_url, api_key=funded_key, max_retries=0, timeout=30) as official:
        yield official
