"""Property tests of the frame codec (4-byte little-endian length + payload) and of strict message parsing."""

from __future__ import annotations

import itertools
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from native_host.framing import (
    FROM_BROWSER_MAX,
    FROM_CLIENT_MAX,
    KEEP,
    MIB,
    READ_SIZE,
    TO_BROWSER_MAX,
    TO_CLIENT_MAX,
    FrameDecoder,
    FrameTooLarge,
    frame,
)
from native_host.protocol import MalformedMessage, dumps, parse

payloads = st.lists(st.binary(max_size=300), max_size=12)


def header(size: int) -> bytes:
    return struct.pack("<I", size)


def stream_of(frames: list[bytes]) -> bytes:
    return b"".join(header(len(f)) + f for f in frames)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """`data` split at the given offsets (duplicates and out-of-range offsets are fine)."""
    bounds = sorted({0, len(data), *(min(p, len(data)) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def reference(data: bytes, limit: int) -> tuple[list[bytes], int]:
    """The frames a stream holds and how many bytes trail them, read the obvious way; raises at a bad header."""
    frames, at = [], 0
    while len(data) - at >= 4:
        (size,) = struct.unpack_from("<I", data, at)
        if size > limit:
            raise FrameTooLarge(size, limit)
        if at + 4 + size > len(data):
            break
        frames.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return frames, len(data) - at


def feed_all(decoder: FrameDecoder, pieces: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for piece in pieces:
        out += decoder.feed(piece)
    return out


@given(payloads, st.lists(st.integers(min_value=0, max_value=4000), max_size=40))
def test_frames_survive_any_split(frames: list[bytes], points: list[int]) -> None:
    decoder = FrameDecoder(1000)
    assert feed_all(decoder, cut(stream_of(frames), points)) == frames
    assert decoder.buffered == 0


@given(payloads)
def test_coalesced_and_byte_by_byte_reads_agree(frames: list[bytes]) -> None:
    data = stream_of(frames)
    assert FrameDecoder(1000).feed(data) == frames
    assert feed_all(FrameDecoder(1000), [data[i : i + 1] for i in range(len(data))]) == frames


@given(payloads, st.data())
def test_truncated_stream_yields_the_complete_frames_and_the_rest(frames: list[bytes], data: st.DataObject) -> None:
    stream = stream_of(frames)
    end = data.draw(st.integers(min_value=0, max_value=len(stream)))
    decoder = FrameDecoder(1000)
    got = feed_all(decoder, cut(stream[:end], data.draw(st.lists(st.integers(0, end), max_size=10))))
    expected, trailing = reference(stream[:end], 1000)
    assert got == expected == frames[: len(expected)]
    assert decoder.buffered == trailing
    # The rest of the stream completes it exactly.
    assert got + decoder.feed(stream[end:]) == frames


@settings(max_examples=300)
@given(st.binary(max_size=600), st.integers(min_value=0, max_value=300),
       st.lists(st.integers(min_value=0, max_value=600), max_size=20))
def test_garbage_decodes_like_the_reference_or_is_refused(data: bytes, limit: int, points: list[int]) -> None:
    decoder = FrameDecoder(limit)
    try:
        expected, trailing = reference(data, limit)
    except FrameTooLarge as refused:
        with pytest.raises(FrameTooLarge) as raised:
            feed_all(decoder, cut(data, points))
        assert (raised.value.size, raised.value.limit) == (refused.size, refused.limit)
        return
    assert feed_all(decoder, cut(data, points)) == expected
    assert decoder.buffered == trailing
    assert all(len(f) <= limit for f in expected)


@pytest.mark.parametrize("limit", [0, 1, 4, 1000])
def test_length_edges(limit: int) -> None:
    exactly = b"a" * limit
    decoder = FrameDecoder(limit)
    assert decoder.feed(header(limit) + exactly) == [exactly]
    assert decoder.feed(header(0)) == [b""]  # an empty frame is a frame (its payload is then not JSON)
    with pytest.raises(FrameTooLarge) as raised:
        FrameDecoder(limit).feed(header(limit + 1))
    assert raised.value.size == limit + 1


@pytest.mark.parametrize("limit", [TO_BROWSER_MAX, FROM_BROWSER_MAX, FROM_CLIENT_MAX, TO_CLIENT_MAX, 2**32 - 1])
def test_real_limits_are_checked_on_the_header_alone(limit: int) -> None:
    """A peer announcing too much is refused before it sends (or we buffer) a byte of the body."""
    at_limit = FrameDecoder(limit)
    assert at_limit.feed(header(limit) + b"{") == []
    assert at_limit.buffered == 5
    if limit < 2**32 - 1:
        with pytest.raises(FrameTooLarge):
            FrameDecoder(limit).feed(header(limit + 1))


@pytest.mark.parametrize("split", [1, 2, 3])
def test_header_split_inside_its_four_bytes(split: int) -> None:
    data = header(3) + b"abc"
    decoder = FrameDecoder(10)
    assert decoder.feed(data[:split]) == []
    assert decoder.feed(data[split:]) == [b"abc"]


def test_header_is_little_endian() -> None:
    assert FrameDecoder(1 << 20).feed(b"\x02\x00\x00\x00hi") == [b"hi"]
    with pytest.raises(FrameTooLarge):
        FrameDecoder(1 << 20).feed(b"\x00\x00\x00\x02")  # 32 MiB if read little-endian


def read_through(decoder: FrameDecoder, data: bytes, sizes: list[int]) -> list[bytes]:
    """`data` read as a transport does: into `get_buffer()`, `sizes` bytes at most per read (cycled)."""
    out: list[bytes] = []
    at, i = 0, 0
    while at < len(data):
        with decoder.get_buffer() as space:
            assert len(space) > 0
            n = min(len(space), sizes[i % len(sizes)], len(data) - at)
            space[:n] = data[at : at + n]
        out += decoder.buffer_updated(n)
        at, i = at + n, i + 1
    return out


@given(payloads, st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=20))
def test_reads_into_the_buffer_agree_with_feed(frames: list[bytes], sizes: list[int]) -> None:
    decoder = FrameDecoder(1000)
    assert read_through(decoder, stream_of(frames), sizes) == frames
    assert decoder.buffered == 0


@pytest.mark.parametrize("sizes", [[1000], [65_536], [7, READ_SIZE, 100_003], [1 << 30]])
def test_long_frames_through_the_reused_buffer(sizes: list[int]) -> None:
    frames = [b"a" * (READ_SIZE - 3), b"b" * 10, b"c" * (KEEP + 12_345), b"d" * (3 * MIB), b"e" * 5, b"f" * MIB]
    decoder = FrameDecoder(FROM_BROWSER_MAX)
    assert read_through(decoder, stream_of(frames), sizes) == frames
    assert decoder.buffered == 0
    assert decoder.capacity <= KEEP  # the memory of the 3 MiB frame was let go, without waiting for another read
    with decoder.get_buffer() as space:
        assert len(space) <= KEEP


@given(payloads, st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=20))
def test_views_are_the_frames_until_the_next_read(frames: list[bytes], sizes: list[int]) -> None:
    """views_updated hands out the frames without copying them; each is right when it is handed out."""
    decoder, data, at, i, out = FrameDecoder(1000, read_size=16), stream_of(frames), 0, 0, []
    while at < len(data):
        with decoder.get_buffer() as space:
            n = min(len(space), sizes[i % len(sizes)], len(data) - at)
            space[:n] = data[at : at + n]
        out += [view.tobytes() for view in decoder.views_updated(n)]  # kept: copied before the next read
        at, i = at + n, i + 1
    assert out == frames


@given(payloads)
def test_one_whole_frame_per_read(frames: list[bytes]) -> None:
    """The relay's usual read, which views_updated takes on a shortcut: one whole frame into an empty buffer."""
    decoder = FrameDecoder(200)
    for payload in frames:
        data = header(len(payload)) + payload
        with decoder.get_buffer() as space:
            space[: len(data)] = data
        if len(payload) > 200:
            with pytest.raises(FrameTooLarge):
                decoder.views_updated(len(data))
            return
        assert [view.tobytes() for view in decoder.views_updated(len(data))] == [payload]
        assert decoder.buffered == 0


def test_capacity_counts_what_a_half_sent_frame_holds_and_release_frees_it() -> None:
    decoder = FrameDecoder(FROM_CLIENT_MAX, read_size=64 * 1024)
    assert decoder.capacity == 64 * 1024
    decoder.feed(header(FROM_CLIENT_MAX) + b"x" * (3 * MIB))
    assert decoder.buffered == 4 + 3 * MIB
    assert 4 + 3 * MIB <= decoder.capacity <= 2 * (4 + 3 * MIB) + KEEP
    decoder.release()
    assert (decoder.capacity, decoder.buffered) == (0, 0)
    with decoder.get_buffer() as space:  # never an empty view, which a read would take for end of file
        assert len(space) >= 64 * 1024


def test_a_header_alone_reserves_at_most_keep() -> None:
    """A peer announcing a long frame and sending nothing more gets at most KEEP bytes set aside for it."""
    decoder = FrameDecoder(FROM_BROWSER_MAX)
    assert decoder.feed(header(FROM_BROWSER_MAX)) == []
    with decoder.get_buffer() as space:
        assert len(space) <= KEEP


def test_a_frame_up_to_keep_can_arrive_in_one_read() -> None:
    size = KEEP - 4
    decoder = FrameDecoder(FROM_BROWSER_MAX)
    assert decoder.feed(header(size) + b"x") == []
    with decoder.get_buffer() as space:
        assert len(space) >= size - 1


@given(st.lists(st.binary(max_size=50), max_size=5))
def test_frame_joins_its_parts_under_one_header(parts: list[bytes]) -> None:
    body = b"".join(parts)
    assert frame(*parts) == header(len(body)) + body
    assert frame(*(memoryview(p) for p in parts)) == header(len(body)) + body


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), json_values, max_size=5), st.text())
def test_parse_reads_back_what_dumps_wrote(fields: dict[str, object], kind: str) -> None:
    message = {**fields, "type": kind}
    assert parse(dumps(message)) == message
    assert dumps(message).isascii()


@given(st.binary(max_size=200))
def test_parse_refuses_garbage_with_one_exception_type(data: bytes) -> None:
    try:
        message = parse(data)
    except MalformedMessage:
        return
    assert isinstance(message, dict) and isinstance(message["type"], str)


@pytest.mark.parametrize(("payload", "why"), [
    (b"", "not valid JSON"),
    (b'{"type":"request"', "not valid JSON"),
    (b'{"type":"x","n":NaN}', "NaN"),
    (b'{"type":"x","n":-Infinity}', "Infinity"),
    (b'{"type":"x","n":1e999}', "too large for a double"),
    (b'{"type":"x","n":-2.5E+400}', "too large for a double"),
    (b'{"type":"x","n":' + b"9" * 5000 + b"}", "not valid JSON"),
    (b'{"type":"x","s":"\xed\xa0\x80"}', "UTF-8"),  # a UTF-8-encoded surrogate
    (b'{"type":"x","s":"\xff"}', "UTF-8"),
    (b"[1,2]", "JSON object"),
    (b'{"id":1}', "string `type`"),
    (b'{"type":7}', "string `type`"),
    (b'{"type":"x","deep":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested"),
])
def test_parse_names_what_is_wrong(payload: bytes, why: str) -> None:
    with pytest.raises(MalformedMessage, match=why):
        parse(payload)


@pytest.mark.parametrize(("payload", "parsed"), [
    (b'{"type":"x"}', {"type": "x"}),
    (b' \n{"type":"x"}', {"type": "x"}),
    (b'{"type":"x"} \r\n', {"type": "x"}),
    (b'{"type":"x"} {"type":"y"}', None),
    (b'{"type":"x"}}', None),
    (b'{"type":"x"', None),
    (b"{", None),
])
def test_parse_agrees_with_the_full_decoder_around_the_object(payload: bytes, parsed: dict[str, str] | None) -> None:
    """parse() hands the usual frame straight to the scanner; whitespace around it, or anything after it, must
    come out as the full decoder has it."""
    if parsed is None:
        with pytest.raises(MalformedMessage, match="not valid JSON"):
            parse(payload)
        with pytest.raises(ValueError):
            json.loads(payload)
    else:
        assert parse(payload) == parsed == json.loads(payload)


def test_dumps_refuses_nan_rather_than_write_invalid_json() -> None:
    with pytest.raises(ValueError):
        dumps({"type": "x", "n": float("nan")})
    assert json.loads(dumps({"type": "x", "s": "é\ud800"})) == {"type": "x", "s": "é\ud800"}
