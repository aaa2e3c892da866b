"""Request estimates of SPEC §4.4 and §4.6: output cap, prompt tokens, image tokens."""

import base64
import json
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.errors import InvalidRequestError
from app.domain.estimate import (
    PromptSize,
    estimated_output_tokens,
    estimated_usage,
    image_part_tokens,
    image_size,
    measure_prompt,
    tokens_for_size,
    validate_max_tokens,
)
from app.domain.usage import Usage


def png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00"


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def webp_vp8x(width: int, height: int) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    body += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body


def webp_vp8l(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    body = b"VP8L" + struct.pack("<I", 5) + b"\x2f" + bits.to_bytes(4, "little")
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body


def webp_vp8(width: int, height: int) -> bytes:
    frame = b"\x00\x00\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height)
    body = b"VP8 " + struct.pack("<I", len(frame)) + frame
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


# -- max tokens ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "req_max"),
    [
        ({}, None),
        ({"max_tokens": 100}, 100),
        ({"max_completion_tokens": 7}, 7),
        ({"max_output_tokens": 9}, 9),
        ({"max_tokens": None}, None),
        ({"max_tokens": 10, "max_completion_tokens": 50}, 50),
    ],
)
def test_validate_max_tokens_returns_the_cap(body: dict[str, object], req_max: int | None) -> None:
    assert validate_max_tokens(body) == req_max


@pytest.mark.parametrize("value", [0, -1, 1.5, 10.0, "10", True, [], {}])
def test_validate_max_tokens_raises_invalid_request_when_not_a_positive_int(value: object) -> None:
    with pytest.raises(InvalidRequestError, match="positive integer"):
        validate_max_tokens({"max_completion_tokens": value})


# -- prompt size -----------------------------------------------------------------------------------------------------
def test_measure_prompt_counts_chat_text_and_messages() -> None:
    body = {"model": "m", "messages": [{"role": "system", "content": "abc"}, {"role": "user", "content": "héllo"}]}

    size = measure_prompt(body)

    assert size == PromptSize(text_bytes=3 + 6, messages=2)
    assert size.reservation_tokens() == 3 + 8
    assert size.billing_tokens() == 3 + 8


def test_measure_prompt_counts_text_parts_tools_and_tool_arguments() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": None, "tool_calls": [call]},
        ],
        "tools": tools,
    }

    size = measure_prompt(body)

    tools_json = json.dumps(tools, separators=(",", ":"))
    assert size.text_bytes == len("hi") + len("f") + len('{"x":1}') + len(tools_json)
    assert size.messages == 2


def test_measure_prompt_counts_system_instructions_input_and_prompt() -> None:
    body = {
        "system": [{"type": "text", "text": "sys"}],
        "instructions": "be nice",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "question"}]}],
        "prompt": "p",
    }

    size = measure_prompt(body)

    assert size.text_bytes == 3 + 7 + 8 + 1
    assert size.messages == 1


def test_measure_prompt_counts_token_id_prompts_as_tokens() -> None:
    assert measure_prompt({"prompt": [1, 2, 3, 4]}).reservation_tokens() == 4


def test_measure_prompt_counts_embedding_inputs() -> None:
    assert measure_prompt({"input": ["abcdef", "gh"]}).text_bytes == 8


def test_measure_prompt_counts_images_and_never_their_base64_as_text() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what?"},
                    {"type": "image_url", "image_url": {"url": data_url(png(512, 512))}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
                ],
            }
        ]
    }

    size = measure_prompt(body)

    assert size.text_bytes == 5
    assert size.images == 2
    assert size.image_tokens == (85 + 170) + 85


@given(st.text(max_size=200), st.integers(min_value=0, max_value=50))
def test_reservation_estimate_is_never_below_billing_estimate(text: str, n: int) -> None:
    size = measure_prompt({"messages": [{"role": "user", "content": text}] * n})

    assert size.reservation_tokens() >= size.billing_tokens()
    assert size.reservation_tokens() == -(-size.text_bytes // 3) + 4 * n


def test_estimated_usage_bills_prompt_uncached_and_output_by_bytes() -> None:
    size = PromptSize(text_bytes=9, messages=1, image_tokens=85, images=1)

    assert estimated_usage(size, 10) == Usage(input=3 + 4 + 85, output=3)
    assert estimated_output_tokens(0) == 0


# -- images ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("width", "height", "tokens"),
    [
        (512, 512, 85 + 170),
        (1024, 1024, 85 + 170 * 4),  # short side 768 -> 2x2 tiles
        (2048, 4096, 85 + 170 * 6),  # fit 1024x2048, then 768x1536 -> 2x3
        (100, 100, 85 + 170),
        (513, 100, 85 + 170 * 2),
        (4096, 4096, 85 + 170 * 4),
    ],
)
def test_tokens_for_size_counts_512px_tiles_after_scaling(width: int, height: int, tokens: int) -> None:
    assert tokens_for_size(width, height) == tokens


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (png(640, 480), (640, 480)),
        (gif(33, 44), (33, 44)),
        (jpeg(1920, 1080), (1920, 1080)),
        (webp_vp8x(3000, 2000), (3000, 2000)),
        (webp_vp8l(17, 9), (17, 9)),
        (webp_vp8(300, 200), (300, 200)),
    ],
)
def test_image_size_reads_each_format_header(data: bytes, size: tuple[int, int]) -> None:
    assert image_size(data) == size


@pytest.mark.parametrize("data", [b"", b"hello", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBP"])
def test_image_size_returns_none_when_unreadable(data: bytes) -> None:
    assert image_size(data) is None


@pytest.mark.parametrize(
    ("part", "tokens"),
    [
        ({"type": "image_url", "image_url": {"url": data_url(jpeg(1024, 1024), "image/jpeg")}}, 85 + 170 * 4),
        ({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}, 1445),
        ({"type": "image_url", "image_url": {"url": data_url(b"not an image")}}, 1445),
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!"}}, 1445),
        ({"type": "image_url", "image_url": "https://example.com/a.png"}, 1445),
        ({"type": "input_image", "image_url": data_url(gif(10, 10)), "detail": "auto"}, 85 + 170),
        ({"type": "input_image", "image_url": data_url(png(4000, 4000)), "detail": "low"}, 85),
        (
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(png(8, 8)).decode()},
            },
            85 + 170,
        ),
        ({"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}, 1445),
    ],
)
def test_image_part_tokens_per_dialect(part: dict[str, object], tokens: int) -> None:
    assert image_part_tokens(part) == tokens


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@given(
    st.dictionaries(
        st.sampled_from(["messages", "input", "prompt", "system", "tools", "instructions", "x"]), json_values
    )
)
def test_measure_prompt_never_raises_on_arbitrary_json(body: dict[str, object]) -> None:
    size = measure_prompt(body)

    assert size.reservation_tokens() >= size.billing_tokens() >= 0


@given(st.binary(max_size=64))
def test_image_size_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    size = image_size(data)

    assert size is None or (size[0] > 0 and size[1] > 0)


@given(
    st.sampled_from([b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8", b"RIFF\x00\x00\x00\x00WEBP"]), st.binary(max_size=64)
)
def test_image_size_never_raises_on_truncated_headers(prefix: bytes, rest: bytes) -> None:
    size = image_size(prefix + rest)

    assert size is None or (size[0] > 0 and size[1] > 0)


def test_measure_prompt_handles_deeply_nested_bodies() -> None:
    nested: object = "deep"
    tools: object = {"leaf": "x"}
    for _ in range(5000):
        nested = [nested]
        tools = {"k": tools}

    size = measure_prompt({"messages": [{"role": "user", "content": nested}], "tools": [tools]})

    assert size.text_bytes >= len("deep") + 5000
