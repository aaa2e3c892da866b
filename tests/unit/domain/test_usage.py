"""Usage normalization across the dialects of SPEC §4.5."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.usage import Usage, normalize_usage, stream_usage


@pytest.mark.parametrize(
    ("payload", "usage"),
    [
        # OpenAI chat: prompt_tokens includes the cache
        (
            {"usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}},
            Usage(input=100, output=20),
        ),
        (
            {"usage": {"prompt_tokens": 100, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 60}}},
            Usage(input=40, cache_read=60, output=20),
        ),
        # DeepSeek-style cache hits
        (
            {"usage": {"prompt_tokens": 100, "completion_tokens": 5, "prompt_cache_hit_tokens": 30}},
            Usage(input=70, cache_read=30, output=5),
        ),
        (
            {
                "usage": {
                    "prompt_tokens": 100,
                    "completion_tokens": 5,
                    "prompt_tokens_details": {"cached_tokens": 10, "cache_write_tokens": 50},
                }
            },
            Usage(input=40, cache_read=10, cache_write=50, output=5),
        ),
        # reasoning already inside completion_tokens (OpenAI)
        (
            {
                "usage": {
                    "prompt_tokens": 10,
                    "completion_tokens": 50,
                    "total_tokens": 60,
                    "completion_tokens_details": {"reasoning_tokens": 40},
                }
            },
            Usage(input=10, output=50),
        ),
        # reasoning reported outside completion_tokens: total exceeds prompt + completion
        (
            {
                "usage": {
                    "prompt_tokens": 10,
                    "completion_tokens": 10,
                    "total_tokens": 60,
                    "completion_tokens_details": {"reasoning_tokens": 40},
                }
            },
            Usage(input=10, output=50),
        ),
        # embeddings
        ({"usage": {"prompt_tokens": 8, "total_tokens": 8}}, Usage(input=8)),
        # Responses body
        (
            {
                "usage": {
                    "input_tokens": 50,
                    "input_tokens_details": {"cached_tokens": 20},
                    "output_tokens": 30,
                    "output_tokens_details": {"reasoning_tokens": 10},
                    "total_tokens": 80,
                }
            },
            Usage(input=30, cache_read=20, output=30),
        ),
        # Responses stream event
        (
            {
                "type": "response.completed",
                "response": {"usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}},
            },
            Usage(input=5, output=7),
        ),
        # Anthropic, additive
        (
            {
                "usage": {
                    "input_tokens": 10,
                    "cache_read_input_tokens": 100,
                    "cache_creation_input_tokens": 20,
                    "output_tokens": 30,
                }
            },
            Usage(input=10, cache_read=100, cache_write=20, output=30),
        ),
        # Anthropic message_start
        (
            {"type": "message_start", "message": {"usage": {"input_tokens": 12, "output_tokens": 1}}},
            Usage(input=12, output=1),
        ),
        # Anthropic message_delta
        ({"type": "message_delta", "usage": {"output_tokens": 15}}, Usage(output=15)),
    ],
)
def test_normalize_usage_maps_each_dialect(payload: dict[str, object], usage: Usage) -> None:
    assert normalize_usage(payload) == usage


@pytest.mark.parametrize(
    "payload",
    [{}, {"usage": None}, {"usage": {}}, {"choices": []}, {"usage": {"foo": 1}}, {"response": {"id": "x"}}],
)
def test_normalize_usage_returns_none_when_no_usage(payload: dict[str, object]) -> None:
    assert normalize_usage(payload) is None


def test_normalize_usage_treats_garbage_counts_as_zero() -> None:
    payload = {"usage": {"prompt_tokens": "lots", "completion_tokens": -5, "total_tokens": True}}

    assert normalize_usage(payload) == Usage()


def test_normalize_usage_caps_cached_tokens_at_prompt_tokens() -> None:
    payload = {"usage": {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 99}}}

    assert normalize_usage(payload) == Usage(input=0, cache_read=10, output=1)


def test_normalize_usage_reads_openrouter_reported_cost() -> None:
    payload = {"usage": {"prompt_tokens": 10, "completion_tokens": 1, "cost": 0.00012}}

    assert normalize_usage(payload) == Usage(input=10, output=1, cost_usd_pusd=120_000_000)


def test_normalize_usage_reads_byok_upstream_inference_cost() -> None:
    payload = {
        "usage": {
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "cost": 0,
            "is_byok": True,
            "cost_details": {"upstream_inference_cost": "0.5"},
        }
    }

    assert normalize_usage(payload) == Usage(input=1, output=1, cost_usd_pusd=500_000_000_000)


def test_usage_merged_combines_message_start_with_message_delta() -> None:
    start = normalize_usage(
        {
            "type": "message_start",
            "message": {"usage": {"input_tokens": 12, "cache_read_input_tokens": 4, "output_tokens": 1}},
        }
    )
    delta = normalize_usage({"type": "message_delta", "usage": {"output_tokens": 15}})
    assert start is not None
    assert delta is not None

    assert start.merged(delta) == Usage(input=12, cache_read=4, output=15)


def test_usage_raises_value_error_when_negative() -> None:
    with pytest.raises(ValueError, match="invalid input"):
        Usage(input=-1)


counts = st.integers(min_value=0, max_value=10**9)


@given(counts, counts, counts, counts)
def test_normalize_usage_openai_preserves_prompt_total(prompt: int, cached: int, written: int, out: int) -> None:
    payload = {
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": out,
            "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
        }
    }

    usage = normalize_usage(payload)

    assert usage is not None
    assert usage.prompt_tokens == prompt
    assert usage.output == out


def test_stream_usage_merges_anthropic_events_in_order() -> None:
    events: list[dict[str, object]] = [
        {
            "type": "message_start",
            "message": {"usage": {"input_tokens": 25, "cache_read_input_tokens": 7, "output_tokens": 1}},
        },
        {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hi"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 42}},
        {"type": "message_stop"},
    ]
    usage: Usage | None = None

    for event in events:
        usage = stream_usage(usage, event)

    assert usage == Usage(input=25, cache_read=7, output=42)


def test_stream_usage_takes_the_latest_openai_usage_and_keeps_it_after_plain_chunks() -> None:
    first = stream_usage(None, {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    after = stream_usage(first, {"choices": [{"delta": {"content": "x"}}], "usage": None})

    assert after == Usage(input=3, output=4)
    assert stream_usage(None, {"choices": []}) is None


def test_stream_usage_reads_responses_completed_event() -> None:
    event = {
        "type": "response.completed",
        "response": {"usage": {"input_tokens": 9, "output_tokens": 2, "total_tokens": 11}},
    }

    assert stream_usage(Usage(output=1), event) == Usage(input=9, output=2)
