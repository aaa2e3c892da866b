"""SSE framer: event boundaries, CRLF, comments, limits and arbitrary chunk splits."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.sse import SseEvent, SseEventTooLargeError, SseFramer, encode_data


def _feed_all(chunks: list[bytes], framer: SseFramer | None = None) -> list[SseEvent]:
    framer = framer or SseFramer()
    events: list[SseEvent] = []
    for chunk in chunks:
        events.extend(framer.feed(chunk))
    events.extend(framer.finish())
    return events


def test_feed_returns_event_only_when_blank_line_arrives() -> None:
    framer = SseFramer()

    first = framer.feed(b'data: {"a":1}\n')
    second = framer.feed(b"\n")

    assert first == []
    assert second == [SseEvent(data='{"a":1}')]


def test_feed_normalizes_crlf_and_lone_cr() -> None:
    events = _feed_all([b"data: one\r\n\r\ndata: two\r\rdata: three\n\n"])

    assert [e.data for e in events] == ["one", "two", "three"]


def test_feed_joins_crlf_split_across_chunks() -> None:
    events = _feed_all([b"data: one\r", b"\n\r", b"\ndata: two\r\n\r\n"])

    assert [e.data for e in events] == ["one", "two"]


def test_feed_drops_comments_and_keeps_event_id_retry() -> None:
    raw = b": keepalive\n\nevent: response.completed\nid: 7\nretry: 3000\n: note\ndata: x\n\n"

    events = _feed_all([raw])

    assert events == [SseEvent(data="x", event="response.completed", id="7", retry="3000")]


def test_feed_joins_multiple_data_lines_with_newline() -> None:
    events = _feed_all([b"data: a\ndata:b\ndata:  c\n\n"])

    assert events == [SseEvent(data="a\nb\n c")]


def test_finish_flushes_event_without_trailing_blank_line() -> None:
    framer = SseFramer()
    framer.feed(b"data: [DONE]")

    events = framer.finish()

    assert events == [SseEvent(data="[DONE]")]


def test_feed_raises_when_event_exceeds_limit() -> None:
    framer = SseFramer(max_event_bytes=64)

    with pytest.raises(SseEventTooLargeError):
        framer.feed(b"data: " + b"x" * 100)


def test_feed_raises_when_complete_event_exceeds_limit() -> None:
    framer = SseFramer(max_event_bytes=64)

    with pytest.raises(SseEventTooLargeError):
        framer.feed(b"data: " + b"x" * 100 + b"\n\n")


def test_feed_accepts_many_small_events_whose_total_exceeds_limit() -> None:
    framer = SseFramer(max_event_bytes=64)

    events = framer.feed(b"data: 0123456789\n\n" * 50)

    assert len(events) == 50


def test_encode_round_trips_through_framer() -> None:
    event = SseEvent(data="line1\nline2", event="cost", id="9", retry="10")

    assert _feed_all([event.encode()]) == [event]


def test_encode_data_writes_typed_event() -> None:
    assert encode_data("{}", event="routstr.change") == b"event: routstr.change\ndata: {}\n\n"


_text = st.text(alphabet=st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=30)
_events = st.lists(
    st.builds(
        SseEvent,
        data=st.one_of(st.none(), _text),
        event=st.one_of(st.none(), _text.filter(lambda t: not t.startswith(" "))),
        id=st.none(),
        retry=st.none(),
    ).filter(lambda e: e.data is not None or e.event is not None),
    max_size=8,
)


@given(events=_events, line_end=st.sampled_from([b"\n", b"\r\n", b"\r"]), cuts=st.lists(st.integers(0, 2000)))
def test_feed_gives_same_events_for_arbitrary_chunk_splits(
    events: list[SseEvent], line_end: bytes, cuts: list[int]
) -> None:
    payload = b": hello\n\n" + b"".join(e.encode() for e in events)
    payload = payload.replace(b"\n", line_end)
    points = sorted({c % (len(payload) + 1) for c in cuts})
    chunks = [payload[a:b] for a, b in zip([0, *points], [*points, len(payload)], strict=True)]

    whole = _feed_all([payload])
    split = _feed_all(chunks)

    assert split == whole
    assert whole == events
