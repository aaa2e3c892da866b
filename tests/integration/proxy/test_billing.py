"""Billed chat completions through the node with the official client: cost headers, body and balance agree."""

import openai

from tests.support.echo_upstream import EchoUpstream
from tests.support.node import LedgerProbe, extra


def test_chat_completion_charges_reported_cost_when_non_streamed(
    client: openai.OpenAI, probe: LedgerProbe, funded_key: str
) -> None:
    before = probe.key(funded_key).balance.value

    raw = client.chat.completions.with_raw_response.create(
        model="echo/echo-1", messages=[{"role": "user", "content": "hello there node"}]
    )
    completion = raw.parse()

    cost = extra(completion.usage)["cost"]
    assert completion.choices[0].message.content == "hello there node"
    assert int(raw.headers["x-routstr-cost-msats"]) == cost["total_msats"] > 0
    assert cost["estimated"] is False
    assert extra(completion.usage)["cost_sats"] == -(-cost["total_msats"] // 1000)
    after = probe.key(funded_key)
    assert before - after.balance.value == cost["total_msats"]
    assert after.reserved.value == 0


def test_chat_completion_stream_ends_with_cost_chunk_before_done(
    client: openai.OpenAI, probe: LedgerProbe, funded_key: str, echo: EchoUpstream
) -> None:
    before = probe.key(funded_key).balance.value

    stream = client.chat.completions.create(
        model="echo/echo-1", messages=[{"role": "user", "content": "one two three"}], stream=True
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    last = chunks[-1]
    assert last.choices == []
    cost = extra(last.usage)["cost"]
    assert before - probe.key(funded_key).balance.value == cost["total_msats"] > 0
    assert echo.received[-1].body.count(b'"include_usage":true') == 1


def test_legacy_completions_stream_is_billed_from_injected_usage(
    client: openai.OpenAI, probe: LedgerProbe, funded_key: str
) -> None:
    before = probe.key(funded_key).balance.value

    chunks = list(client.completions.create(model="echo/echo-1", prompt="complete these words", stream=True))

    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == "complete these words"
    usage = chunks[-1].usage
    assert usage is not None
    assert extra(usage)["cost"]["estimated"] is False
    assert before - probe.key(funded_key).balance.value == extra(usage)["cost"]["total_msats"] > 0


def test_responses_non_streamed_carries_cost_in_usage(
    client: openai.OpenAI, probe: LedgerProbe, funded_key: str
) -> None:
    before = probe.key(funded_key).balance.value

    response = client.responses.create(model="echo/echo-1", input="respond to me")

    assert response.output_text == "respond to me"
    assert response.usage is not None
    cost = extra(response.usage)["cost"]
    assert before - probe.key(funded_key).balance.value == cost["total_msats"] > 0
