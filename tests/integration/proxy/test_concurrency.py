"""Many concurrent requests on one key funded for fewer: every msat accounted for, only 200 and 402."""

import asyncio
import collections

import httpx
import pytest

from tests.support.echo_upstream import EchoUpstream
from tests.support.node import LedgerProbe, NodeProcess, ServedNode, node_environment

CHAT = {"model": "echo/echo-1", "messages": [{"role": "user", "content": "same words every time"}], "max_tokens": 8}


async def _fire(urls: list[str], key: str, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        return await asyncio.gather(
            *(
                client.post(
                    urls[n % len(urls)] + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"}
                )
                for n in range(count)
            )
        )


def _cost_and_reservation(node_url: str, probe: LedgerProbe) -> tuple[int, int]:
    """One request's cost, and its reservation, measured on a separate key."""
    key = probe.create_key(10_000_000)
    response = httpx.post(node_url + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"})
    reservation = probe.reservation(response.headers["x-routstr-request-id"])
    assert reservation is not None
    return int(response.headers["x-routstr-cost-msats"]), reservation.amount.value


def _funding(paid_requests: int, cost: int, reservation: int) -> int:
    """Enough for `paid_requests` charges at most, however the requests interleave: funding by the reservation
    alone lets requests that happen to run one after another all succeed (each charges less than it holds)."""
    assert cost < reservation <= paid_requests * cost
    return paid_requests * cost


def _check(responses: list[httpx.Response], probe: LedgerProbe, key: str, funded: int, cost: int) -> None:
    statuses = collections.Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 402}, statuses
    assert statuses[200] > 0
    assert statuses[402] > 0
    assert all(int(r.headers["x-routstr-cost-msats"]) == cost for r in responses if r.status_code == 200)
    after = probe.key(key)
    assert funded - after.balance.value == statuses[200] * cost
    assert after.reserved.value == 0
    assert after.balance.value >= 0


async def test_200_concurrent_requests_charge_exactly_successes_times_cost_on_sqlite(
    node: ServedNode, probe: LedgerProbe
) -> None:
    cost, reservation = await asyncio.to_thread(_cost_and_reservation, node.url, probe)
    funded = _funding(40, cost, reservation)
    key = await asyncio.to_thread(probe.create_key, funded)

    responses = await _fire([node.url], key, 200)

    await asyncio.to_thread(_check, responses, probe, key, funded, cost)


@pytest.mark.postgres
@pytest.mark.parametrize(("requests", "funded_for"), [(50, 30), (200, 40)])
async def test_two_node_processes_on_postgresql_return_only_200_and_402(
    postgres_database_url: str, echo: EchoUpstream, requests: int, funded_for: int
) -> None:
    probe = LedgerProbe(postgres_database_url)
    env = node_environment(postgres_database_url, echo.base_url)
    with NodeProcess(env) as first, NodeProcess(env) as second:
        cost, reservation = await asyncio.to_thread(_cost_and_reservation, first.url, probe)
        funded = _funding(funded_for, cost, reservation)
        key = await asyncio.to_thread(probe.create_key, funded)

        responses = await _fire([first.url, second.url], key, requests)

    await asyncio.to_thread(_check, responses, probe, key, funded, cost)
