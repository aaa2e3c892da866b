"""Pricing through the node (SPEC §18 scenario 21): stale rate, fees, cache reads and the /v1/models figures."""

import httpx
import msgspec
import openai

from app.domain.money import ceil_div
from tests.support.echo_upstream import EchoUpstream
from tests.support.node import LedgerProbe, ServedNode, extra, node_settings

B = 100_000 * 10**6  # micro-USD per BTC (BTC_USD_PRICE=100000)
EXCH, PROV = 1_005_000, 1_050_000


def _spec_msat(pusd: int) -> int:
    """SPEC §4.1 written out: ceil(x·exch_ppm·prov_ppm·10^5 / (B·10^12))."""
    return ceil_div(pusd * EXCH * PROV * 10**5, B * 10**12)


def test_stale_rate_refuses_priced_requests_with_503_and_nulls_sats_pricing(
    sqlite_database_url: str, echo: EchoUpstream, probe: LedgerProbe
) -> None:
    key = probe.create_key(10_000_000)
    settings = node_settings(sqlite_database_url, echo.base_url, PRICE_SOURCES="kraken")
    settings = msgspec.structs.replace(settings, btc_usd_price_micro=None)

    with ServedNode(settings) as node:
        response = httpx.post(
            node.base_url + "/chat/completions",
            json={"model": "echo/echo-1", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {key}"},
        )
        models = httpx.get(node.base_url + "/models").json()

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "price_unavailable"
    assert probe.key(key).reserved.value == 0
    assert [r for r in echo.received if r.method == "POST"] == []
    assert all(m["sats_pricing"] is None for m in models["data"])
    assert all(m["pricing"]["max_cost"] for m in models["data"])


def test_charge_follows_the_spec_formula_with_both_fees(
    client: openai.OpenAI, probe: LedgerProbe, funded_key: str
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="echo/echo-1", messages=[{"role": "user", "content": "four words right here"}]
    )
    completion = raw.parse()

    usage = completion.usage
    assert usage is not None
    upstream_pusd = usage.prompt_tokens * 1_000_000 + usage.completion_tokens * 2_000_000
    assert extra(usage)["cost"]["total_msats"] == _spec_msat(upstream_pusd)
    assert raw.headers["x-routstr-cost-usd"] == f"{_spec_msat(upstream_pusd) * 100_000 / 10**11:.8f}"


def test_input_cache_read_is_billed_at_its_own_price(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="echo/echo-cached",
        messages=[{"role": "user", "content": "cached words in this prompt"}],
        extra_body={"echo": {"cached_tokens": 5}},
    )

    usage = completion.usage
    assert usage is not None
    cost = extra(usage)["cost"]
    uncached = usage.prompt_tokens - 5
    upstream_pusd = uncached * 4_000_000 + 5 * 1_000_000 + usage.completion_tokens * 8_000_000
    assert cost["cache_read_input_tokens"] == 5
    assert cost["cache_read_msats"] > 0
    assert cost["total_msats"] == _spec_msat(upstream_pusd)


def test_models_list_shows_fee_inclusive_prices_and_max_cost_covering_any_reservation(
    node: ServedNode, probe: LedgerProbe, funded_key: str
) -> None:
    listing = httpx.get(node.url + "/models/").json()
    by_id = {m["id"]: m for m in listing["data"]}
    one = httpx.get(node.base_url + "/models/echo/echo-1").json()
    response = httpx.post(
        node.base_url + "/chat/completions",
        json={"model": "echo/echo-1", "messages": [{"role": "user", "content": "x " * 3000}]},
        headers={"authorization": f"Bearer {funded_key}"},
    )
    reservation = probe.reservation(response.headers["x-routstr-request-id"])

    assert listing["object"] == "list"
    assert one == by_id["echo/echo-1"]
    assert one["pricing"]["prompt"] == "0.00000105525"  # 0.000001 x 1.005 x 1.05
    assert one["top_provider"]["context_length"] == 8192
    max_cost_msat = _spec_msat(8192 * 1_000_000 + 1024 * 2_000_000)
    assert one["sats_pricing"]["max_cost"] == max_cost_msat / 1000
    assert reservation is not None
    assert reservation.amount.value <= max_cost_msat
    assert httpx.get(node.base_url + "/models/nope").status_code == 404
