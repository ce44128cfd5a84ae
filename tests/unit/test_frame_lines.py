"""Recorded frames read a block at a time are the frames read a line at a time.

``read_frame_lines`` and the replay readers split a recording's decompressed bytes in
blocks of about 1 MiB and clean the lines in bulk (``spikewatch.replay.tape``). The
reference here is the line-at-a-time loop they replaced, written out plainly; the lines
are real recorded frames (tests/fixtures) in every layout a recording has: bare frames,
hftbacktest's ``<recv_ns> <frame>``, ``spikewatch record``'s ``{"recv_ns":..,"frame":..}``,
with CRLF endings, blank lines, stray spaces and a last line without its newline.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import itertools
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikewatch.replay.tape import frames_of_lines, line_blocks, read_frame_lines

BTC_FRAMES = "binance-spot-BTCUSDT-trade-msgs-2024-08-08T2354Z_2024-08-09T0005Z.jsonl.gz"
RAW_FRAMES = "binance-spot-trade-raw.hftbacktest-2024-08-08.jsonl"
SPACED_FRAMES = "binance-spot-trade-legacy-ba-fields.BinanceTickDataTracker-2023-11-03.jsonl"


class Recorded(msgspec.Struct):
    recv_ns: int
    frame: str


def reference_frames(data: bytes) -> list[bytes]:
    """The frames of a recording as the line-at-a-time reader gave them."""
    frames = []
    for raw in io.BytesIO(data):
        line = raw.strip()
        if not line:
            continue
        if line[:1].isdigit():
            line = line.partition(b" ")[2]
        elif line.startswith(b'{"recv_ns"'):
            with contextlib.suppress(msgspec.DecodeError):  # kept as it is
                line = msgspec.json.decode(line, type=Recorded).frame.encode()
        frames.append(line)
    return frames


def block_frames(
    data: bytes, cuts: list[int], keep: bytes | None = None
) -> tuple[list[bytes], int]:
    """The frames and non-blank lines of ``data`` read in chunks cut at ``cuts``."""
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    frames: list[bytes] = []
    rows = 0
    for lines, _ in line_blocks(chunks):
        got, count = frames_of_lines(lines, keep)
        frames += got
        rows += count
    return frames, rows


@pytest.fixture(scope="module")
def samples(fixtures_dir: Path) -> list[bytes]:
    """Real frames: combined, raw and re-spaced (a third-party recorder's) trade frames."""
    with gzip.open(fixtures_dir / BTC_FRAMES, "rb") as handle:
        combined = [next(handle).rstrip(b"\n") for _ in range(30)]
    raw = (fixtures_dir / RAW_FRAMES).read_bytes().splitlines()[:30]
    spaced = (fixtures_dir / SPACED_FRAMES).read_bytes().splitlines()[:30]
    return combined + raw + spaced


def layouts(frame: bytes, recv_ns: int) -> list[bytes]:
    """The line a recording may hold ``frame`` as (without its newline)."""
    recorded = msgspec.json.encode(Recorded(recv_ns, frame.decode()))
    return [
        frame,
        b"%d %s" % (recv_ns, frame),  # hftbacktest
        recorded,  # spikewatch record
        frame + b"\r",  # CRLF
        b"  " + frame + b" \t",
        b"",  # blank
        b" \r",  # blank, CRLF
        b"%d" % recv_ns,  # a time stamp and nothing else: an empty frame
        recorded[:40],  # a recorder line cut short: kept as it is
        frame[:50],  # a frame cut short
    ]


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_frames_read_in_blocks_are_the_frames_read_line_by_line(
    samples: list[bytes], data: st.DataObject
) -> None:
    picks = data.draw(
        st.lists(st.tuples(st.sampled_from(samples), st.integers(0, 9)), min_size=0, max_size=40)
    )
    lines = [layouts(frame, 1723161255030314667 + i)[kind] for i, (frame, kind) in enumerate(picks)]
    text = b"\n".join(lines)
    if data.draw(st.booleans()):
        text += b"\n"  # else the last line has no newline
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=8))

    frames, rows = block_frames(text, cuts)

    expected = reference_frames(text)
    assert frames == expected
    assert rows == len(expected)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_kept_lines_are_read_the_same_and_the_others_only_counted(
    samples: list[bytes], data: st.DataObject
) -> None:
    picks = data.draw(st.lists(st.tuples(st.sampled_from(samples), st.integers(0, 9)), max_size=40))
    lines = [layouts(frame, 1723161255030314667 + i)[kind] for i, (frame, kind) in enumerate(picks)]
    text = b"\n".join(lines) + b"\n"
    keep = data.draw(st.sampled_from([b"trade", b'"m":true', b"1723161255"]))

    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=4))

    frames, rows = block_frames(text, cuts, keep)

    kept = b"\n".join(line for line in text.split(b"\n") if keep in line)
    assert frames == reference_frames(kept)
    assert rows == len(reference_frames(text))


@pytest.mark.parametrize("split", [b"", b"\n", b"\n\n", b"abc", b"\n" * 3 + b"x"])
def test_line_blocks_count_across_chunk_edges(split: bytes) -> None:
    marker = b'"e":"trade"'
    text = (b'{"e":"trade"}' + split) * 7 + b'{"e":"tra'
    for size in range(1, len(text) + 1):
        chunks = [text[i : i + size] for i in range(0, len(text), size)]

        blocks = list(line_blocks(chunks, marker))

        assert [line for lines, _ in blocks for line in lines] == text.split(b"\n")
        for lines, count in blocks:
            assert count == sum(line.count(marker) for line in lines)


def test_read_frame_lines_of_a_gzip_recording(fixtures_dir: Path) -> None:
    path = fixtures_dir / BTC_FRAMES
    with gzip.open(path, "rb") as handle:
        expected = reference_frames(handle.read())

    frames = list(read_frame_lines(path))

    assert len(frames) == 19_904
    assert frames == expected


def test_read_frame_lines_of_a_plain_hftbacktest_capture(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    frames = (fixtures_dir / RAW_FRAMES).read_bytes().splitlines()
    path = tmp_path / "btcusdt.hftbacktest.jsonl"
    path.write_bytes(
        b"".join(b"%d %s\r\n" % (1723161255030314667 + i, f) for i, f in enumerate(frames))
    )

    assert list(read_frame_lines(path)) == frames
