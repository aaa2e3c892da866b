"""Request size estimates: output cap, prompt tokens for reservations and missing usage, image tokens (SPEC §4.4).

Image sizes are read only from `data:` URLs already in the body; user-supplied URLs are never fetched.
"""

import base64
import binascii
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from app.domain.errors import InvalidRequestError
from app.domain.money import ceil_div
from app.domain.usage import Usage

MAX_TOKENS_FIELDS: Final = ("max_tokens", "max_completion_tokens", "max_output_tokens")
LOW_DETAIL_IMAGE_TOKENS: Final = 85
UNKNOWN_IMAGE_TOKENS: Final = 1445
IMAGE_BASE_TOKENS: Final = 85
IMAGE_TILE_TOKENS: Final = 170
TILE_PX: Final = 512
FIT_PX: Final = 2048
SHORT_SIDE_PX: Final = 768
TOKENS_PER_MESSAGE: Final = 4
RESERVATION_BYTES_PER_TOKEN: Final = 3
BILLING_BYTES_PER_TOKEN: Final = 4
_IMAGE_PART_TYPES: Final = frozenset({"image_url", "input_image", "image"})
_SKIPPED_KEYS: Final = frozenset({"role", "type", "id", "tool_call_id", "call_id", "detail", "cache_control", "status"})
_TEXT_FIELDS: Final = ("system", "instructions", "input", "prompt")
_TOOL_FIELDS: Final = ("tools", "functions", "tool_choice")


def validate_max_tokens(body: Mapping[str, object]) -> int | None:
    """The client's output cap (`req_max`), or None when no cap is given.

    Each of `max_tokens`, `max_completion_tokens`, `max_output_tokens` that is present and not null must be a
    positive integer, else InvalidRequestError (400 `invalid_request`). When several are given the largest counts,
    so the reservation covers whichever the upstream honours.
    """
    found: list[int] = []
    for name in MAX_TOKENS_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if type(value) is not int or value <= 0:
            msg = f"{name} must be a positive integer"
            raise InvalidRequestError(msg, details={"param": name})
        found.append(value)
    return max(found) if found else None


@dataclass(frozen=True, slots=True)
class PromptSize:
    """What a request body sends: UTF-8 bytes of all input text (tool definitions and arguments as JSON),
    messages / input items, image tokens and count, and prompt tokens given directly as token ids."""

    text_bytes: int = 0
    messages: int = 0
    image_tokens: int = 0
    images: int = 0
    token_ids: int = 0

    def reservation_tokens(self) -> int:
        """`est_prompt` for reservations: ceil(text_bytes/3) + 4·messages + image_tokens (SPEC §4.4)."""
        return self._tokens(RESERVATION_BYTES_PER_TOKEN)

    def billing_tokens(self) -> int:
        """The prompt estimate when usage is missing: ceil(text_bytes/4) + 4·messages + image_tokens (SPEC §4.6)."""
        return self._tokens(BILLING_BYTES_PER_TOKEN)

    def _tokens(self, bytes_per_token: int) -> int:
        return (
            ceil_div(self.text_bytes, bytes_per_token)
            + TOKENS_PER_MESSAGE * self.messages
            + self.image_tokens
            + self.token_ids
        )


def estimated_output_tokens(generated_bytes: int) -> int:
    """ceil(generated_bytes/4): content, reasoning, tool arguments and refusals received (SPEC §4.6)."""
    return ceil_div(max(generated_bytes, 0), BILLING_BYTES_PER_TOKEN)


def estimated_usage(prompt: PromptSize, generated_bytes: int) -> Usage:
    """The usage billed when the upstream reported none: all prompt tokens uncached (never free)."""
    return Usage(input=prompt.billing_tokens(), output=estimated_output_tokens(generated_bytes))


class _Meter:
    def __init__(self) -> None:
        self.text_bytes = 0
        self.image_tokens = 0
        self.images = 0
        self.token_ids = 0

    def text(self, value: str) -> None:
        self.text_bytes += len(value.encode("utf-8", "surrogatepass"))

    def as_json(self, value: object) -> None:
        try:
            self.text(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))
        except (RecursionError, ValueError):
            self.walk(value, count_keys=True)  # absurdly deep: count its strings instead

    def image(self, tokens: int) -> None:
        self.images += 1
        self.image_tokens += tokens

    def walk(self, root: object, *, count_keys: bool = False) -> None:
        """Count every string of a message-like structure; images by their header; token-id lists as tokens.

        Iterative, so a deeply nested body cannot exhaust the interpreter stack.
        """
        stack: list[object] = [root]
        while stack:
            value = stack.pop()
            if isinstance(value, str):
                self.text(value)
            elif isinstance(value, Mapping):
                if not count_keys and (value.get("type") in _IMAGE_PART_TYPES or "image_url" in value):
                    self.image(image_part_tokens(value))
                    continue
                for key, item in value.items():
                    if count_keys:
                        self.text(str(key))
                        stack.append(item)
                    elif key in _SKIPPED_KEYS:
                        continue
                    elif key in {"input", "arguments", "parameters"} and isinstance(item, Mapping):
                        self.as_json(item)  # tool_use input / parsed arguments: billed as JSON
                    else:
                        stack.append(item)
            elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
                if value and all(type(v) is int for v in value):
                    self.token_ids += len(value)
                    continue
                stack.extend(reversed(value))


def measure_prompt(body: Mapping[str, object]) -> PromptSize:
    """Measure a proxied JSON body once: `messages`, `system`, `instructions`, `input`, `prompt` and the tools."""
    meter = _Meter()
    messages = 0
    chat = body.get("messages")
    if isinstance(chat, Sequence) and not isinstance(chat, str):
        messages += len(chat)
        meter.walk(chat)
    for name in _TEXT_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, Sequence) and not isinstance(value, str) and name == "input":
            messages += sum(1 for item in value if isinstance(item, Mapping))
        meter.walk(value)
    for name in _TOOL_FIELDS:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            meter.as_json(value)
    return PromptSize(
        text_bytes=meter.text_bytes,
        messages=messages,
        image_tokens=meter.image_tokens,
        images=meter.images,
        token_ids=meter.token_ids,
    )


def image_part_tokens(part: Mapping[str, object]) -> int:
    """Tokens of one image content part: OpenAI `image_url`, Responses `input_image`, Anthropic `image`.

    `detail:"low"` counts 85; a `data:` URL (or Anthropic base64 source) with a readable PNG/JPEG/GIF/WebP header
    counts 85 + 170·tiles; anything else 1445.
    """
    url: object = part.get("image_url")
    detail: object = part.get("detail")
    if isinstance(url, Mapping):
        detail = url.get("detail", detail)
        url = url.get("url")
    if detail == "low":
        return LOW_DETAIL_IMAGE_TOKENS
    data: bytes | None = None
    if isinstance(url, str):
        data = _data_url_bytes(url)
    source = part.get("source")
    if data is None and isinstance(source, Mapping) and source.get("type") == "base64":
        encoded = source.get("data")
        if isinstance(encoded, str):
            data = _b64(encoded)
    size = image_size(data) if data is not None else None
    if size is None:
        return UNKNOWN_IMAGE_TOKENS
    return tokens_for_size(*size)


def tokens_for_size(width: int, height: int) -> int:
    """85 + 170·tiles: fit in 2048x2048, scale the short side down to 768, count 512-px tiles."""
    w, h = float(width), float(height)
    if w <= 0 or h <= 0:
        return UNKNOWN_IMAGE_TOKENS
    if max(w, h) > FIT_PX:
        scale = FIT_PX / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > SHORT_SIDE_PX:
        scale = SHORT_SIDE_PX / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / TILE_PX) * math.ceil(h / TILE_PX)
    return IMAGE_BASE_TOKENS + IMAGE_TILE_TOKENS * tiles


def _data_url_bytes(url: str) -> bytes | None:
    if not url.startswith("data:"):
        return None
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        return None
    return _b64(payload)


def _b64(payload: str) -> bytes | None:
    try:
        return base64.b64decode(payload.strip(), validate=False)
    except (binascii.Error, ValueError):
        return None


_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF: Final = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, GIF or WebP header; None when unreadable."""
    if data.startswith(_PNG_SIGNATURE) and len(data) >= 24 and data[12:16] == b"IHDR":  # noqa: PLR2004
        width, height = struct.unpack(">II", data[16:24])
        return _positive(width, height)
    if data[:6] in {b"GIF87a", b"GIF89a"} and len(data) >= 10:  # noqa: PLR2004
        width, height = struct.unpack("<HH", data[6:10])
        return _positive(width, height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _positive(width: int, height: int) -> tuple[int, int] | None:
    return (width, height) if width > 0 and height > 0 else None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":  # noqa: PLR2004
        width, height = struct.unpack("<HH", data[26:30])
        return _positive(width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:  # noqa: PLR2004
        bits = int.from_bytes(data[21:25], "little")
        return _positive((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(data) >= 30:  # noqa: PLR2004
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return _positive(width, height)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    index = 2
    while index + 4 <= len(data):
        if data[index] != 0xFF:  # noqa: PLR2004
            return None
        marker = data[index + 1]
        if marker == 0xFF:  # noqa: PLR2004 - fill byte
            index += 1
            continue
        if marker in {0xD8, 0x01} or 0xD0 <= marker <= 0xD7:  # noqa: PLR2004 - markers without a length
            index += 2
            continue
        (length,) = struct.unpack(">H", data[index + 2 : index + 4])
        if marker in _JPEG_SOF:
            if index + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[index + 5 : index + 9])
            return _positive(width, height)
        if length < 2:  # noqa: PLR2004
            return None
        index += 2 + length
    return None
