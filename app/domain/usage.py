"""Token usage normalized across the OpenAI, Responses and Anthropic dialects (SPEC §4.5)."""

from collections.abc import Mapping
from dataclasses import dataclass

from app.domain.usd import parse_usd


@dataclass(frozen=True, slots=True)
class Usage:
    """Billable token counts. The four buckets are disjoint: `input` excludes cached tokens, `output` includes
    reasoning tokens. `cost_usd_pusd` is the upstream's own USD cost in pUSD when it reported one (only trusted for
    `openrouter` providers, SPEC §4.5)."""

    input: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    cost_usd_pusd: int | None = None

    def __post_init__(self) -> None:
        for name in ("input", "cache_read", "cache_write", "output"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                msg = f"invalid {name} token count: {value!r}"
                raise ValueError(msg)

    @property
    def prompt_tokens(self) -> int:
        """All prompt-side tokens, cached or not (the OpenAI `prompt_tokens` figure)."""
        return self.input + self.cache_read + self.cache_write

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output

    def merged(self, later: "Usage") -> "Usage":
        """Combine an Anthropic `message_start` usage with a later `message_delta`: each bucket takes the later
        figure when it is non-zero (deltas carry cumulative counts), otherwise keeps the earlier one."""
        return Usage(
            input=later.input or self.input,
            cache_read=later.cache_read or self.cache_read,
            cache_write=later.cache_write or self.cache_write,
            output=later.output or self.output,
            cost_usd_pusd=later.cost_usd_pusd if later.cost_usd_pusd is not None else self.cost_usd_pusd,
        )


def _count(value: object) -> int:
    """A token count from JSON: non-negative ints (and integral floats); anything else counts 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value.is_integer():
        return max(int(value), 0)
    return 0


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _is_anthropic(usage: Mapping[str, object]) -> bool:
    return any(k in usage for k in ("cache_read_input_tokens", "cache_creation_input_tokens")) or (
        "input_tokens" in usage
        and "input_tokens_details" not in usage
        and "output_tokens_details" not in usage
        and "total_tokens" not in usage
    )


def _openai(usage: Mapping[str, object]) -> Usage:
    prompt = _count(usage.get("prompt_tokens"))
    details = _mapping(usage.get("prompt_tokens_details"))
    cache_read = _count(details.get("cached_tokens")) or _count(usage.get("prompt_cache_hit_tokens"))
    cache_write = _count(details.get("cache_write_tokens")) or _count(usage.get("cache_write_tokens"))
    completion = _count(usage.get("completion_tokens"))
    reasoning = _count(_mapping(usage.get("completion_tokens_details")).get("reasoning_tokens"))
    # Some upstreams report reasoning outside completion_tokens: then total_tokens exceeds prompt + completion.
    total = _count(usage.get("total_tokens"))
    if reasoning and total >= prompt + completion + reasoning:
        completion += reasoning
    cache_read = min(cache_read, prompt)
    cache_write = min(cache_write, prompt - cache_read)
    return Usage(
        input=prompt - cache_read - cache_write, cache_read=cache_read, cache_write=cache_write, output=completion
    )


def _responses(usage: Mapping[str, object]) -> Usage:
    prompt = _count(usage.get("input_tokens"))
    cached = min(_count(_mapping(usage.get("input_tokens_details")).get("cached_tokens")), prompt)
    output = _count(usage.get("output_tokens"))
    reasoning = _count(_mapping(usage.get("output_tokens_details")).get("reasoning_tokens"))
    total = _count(usage.get("total_tokens"))
    if reasoning and total >= prompt + output + reasoning:
        output += reasoning
    return Usage(input=prompt - cached, cache_read=cached, output=output)


def _anthropic(usage: Mapping[str, object]) -> Usage:
    return Usage(
        input=_count(usage.get("input_tokens")),
        cache_read=_count(usage.get("cache_read_input_tokens")),
        cache_write=_count(usage.get("cache_creation_input_tokens")),
        output=_count(usage.get("output_tokens")),
    )


def _reported_cost(usage: Mapping[str, object]) -> int | None:
    """OpenRouter's `usage.cost` (USD), or `cost_details.upstream_inference_cost` when `is_byok`, in pUSD."""
    value = usage.get("cost")
    if usage.get("is_byok") is True:
        value = _mapping(usage.get("cost_details")).get("upstream_inference_cost")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return parse_usd(value)
    except ValueError:
        return None


def normalize_usage_object(usage: Mapping[str, object]) -> Usage | None:
    """Normalize one `usage` object of any dialect; None when it carries no token counts at all."""
    keys = (
        "prompt_tokens",
        "completion_tokens",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "total_tokens",
    )
    if not any(k in usage for k in keys):
        return None
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        normalized = _openai(usage)
    elif _is_anthropic(usage):
        normalized = _anthropic(usage)
    else:
        normalized = _responses(usage)
    cost = _reported_cost(usage)
    if cost is None:
        return normalized
    return Usage(normalized.input, normalized.cache_read, normalized.cache_write, normalized.output, cost)


def normalize_usage(payload: Mapping[str, object]) -> Usage | None:
    """The usage of a response body or stream event, or None when it has none.

    Looks at `usage` (chat, completions, embeddings, Responses bodies, Anthropic messages and `message_delta`),
    `response.usage` (Responses stream events) and `message.usage` (Anthropic `message_start`). Merging a
    `message_start` with its `message_delta` is `Usage.merged`.
    """
    usage = payload.get("usage")
    if isinstance(usage, Mapping):
        found = normalize_usage_object(usage)
        if found is not None:
            return found
    for container in ("response", "message"):
        inner = _mapping(payload.get(container)).get("usage")
        if isinstance(inner, Mapping):
            found = normalize_usage_object(inner)
            if found is not None:
                return found
    return None


def stream_usage(previous: Usage | None, payload: Mapping[str, object]) -> Usage | None:
    """The usage known after one more parsed stream event (any dialect), given what was known before.

    Anthropic `message_start` carries the input side under `message.usage` and `message_delta` the cumulative
    output, so a delta is merged into what came before; in the other dialects the latest usage wins. Events
    without usage keep `previous`.
    """
    found = normalize_usage(payload)
    if found is None:
        return previous
    if payload.get("type") == "message_delta" and previous is not None:
        return previous.merged(found)
    return found
