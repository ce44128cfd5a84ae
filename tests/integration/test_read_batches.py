"""Frames handed over a network read at a time end exactly as frames handed one by one.

The live client gives the engine all the messages of each read in one call
(:meth:`Engine.handle_frames`); reads of :data:`BATCH_FROM` frames or more take the batch
paths (one decoding call, detectors over columns), anything unusual falls back to frame by
frame. Whatever the cut, and whatever is mixed into the stream (malformed frames, controls,
re-sent runs, lost runs, other symbols), a user must see the same thing as with
:meth:`Engine.handle_frame` on each frame: the same signals in the same order, the same
live events, counters, gap records, bars and lag histograms.

Offline engines (no event loop): a gap cannot be fetched, so it is abandoned at once and
recorded, as the engine does without REST.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import queue
import random
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikewatch.config import load_settings
from spikewatch.core.kernel import SymbolState
from spikewatch.core.model import Signal, TradeBatch
from spikewatch.engine import Engine
from spikewatch.hub import Subscription
from spikewatch.replay.simulator import BAD_FRAMES
from spikewatch.store.sqlite import SQLiteSignalStore

from reference import reference_spikes

#: Frames of the recording the property tests play (a few seconds of trading, with spikes).
#: Reads of at least this many frames were once the only ones to take the batch paths; the
#: strategies below still mix reads of a few frames and bursts.
BATCH_FROM = 32
PREFIX = 4000

MALFORMED: tuple[bytes, ...] = (
    b'{"e":"trade"',  # cut short
    b"[]",
    b'{"e":"trade","s":"BTCUSDT","t":-1}',
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":-1,'
    b'"p":"1.0","q":"1.0","T":1,"m":true}}',  # complete, but a negative trade id
    b'{"code":2,"msg":"Invalid request"}',  # an error reply
    b"",
    *BAD_FRAMES,
)
CONTROLS: tuple[bytes, ...] = (
    b'{"result":null,"id":1}',  # the answer to a SUBSCRIBE
    b'{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"1","B":"1"}}',
    b'{"e":"aggTrade","E":1,"s":"BTCUSDT","a":1,"p":"1.0","q":"1.0","T":1,"m":true}',
)
SHUTDOWN = b'{"e":"serverShutdown","E":1723161300000}'


def _retag(frame: bytes, symbol: str, id_shift: int) -> bytes:
    """A recorded trade frame as a trade of another symbol, its id moved by ``id_shift``."""
    doc = json.loads(frame)
    data = doc["data"]
    data["s"] = symbol
    data["t"] += id_shift
    doc["stream"] = f"{symbol.lower()}@trade"
    return json.dumps(doc, separators=(",", ":")).encode()


def _raw(frame: bytes) -> bytes:
    """The same trade as a raw-stream frame (no combined-stream wrapper)."""
    doc = json.loads(frame)
    return json.dumps(doc["data"], separators=(",", ":")).encode() if "data" in doc else frame


def _trade_time_ms(frame: bytes) -> int | None:
    """The exchange time of a trade frame, if it is one."""
    try:
        doc = json.loads(frame)
        event = doc.get("data", doc)
        return int(event["T"]) if event.get("e") == "trade" else None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


# -- two engines fed the same stream -----------------------------------------------------


@dataclasses.dataclass
class Offline:
    """An engine fed by hand, with everything a user can see of it."""

    engine: Engine
    store: SQLiteSignalStore
    signals: list[Signal]  # from a listener, in delivery order
    live: Subscription  # the live stream (signal and gap events)

    def seen(self) -> dict[str, Any]:
        """Every observable outcome except the float sums of the lag histograms."""
        engine = self.engine
        symbols = engine.settings.symbols
        events: list[tuple[str, int | None, bytes]] = []
        with contextlib.suppress(queue.Empty):
            while True:
                event = self.live.queue.get_nowait()
                events.append((event.kind, event.id, event.data))
        gaps = sorted(self.store.gaps(limit=10_000), key=lambda g: (g.time_us, g.first_id))
        return {
            "signal ids": [s.id for s in self.signals],
            "signals": self.signals,
            "live events": events,
            "status": msgspec.to_builtins(engine.status()),
            "gap records": gaps,
            "bars": {s: engine.bars(s) for s in symbols},
            "lag counts": {s: h.counts for s, h in engine.lag_histograms().items()},
            "last seq": engine.last_seq(),
            "latest": [engine.latest_signal(s) for s in (None, *symbols)],
        }

    def lag_sums(self) -> dict[str, float]:
        return {s: h.sum_ms for s, h in self.engine.lag_histograms().items()}


@contextlib.contextmanager
def offline_engine(symbols: str = "BTCUSDT", **flags: object) -> Iterator[Offline]:
    settings_ = load_settings({"db": ":memory:", "symbols": symbols, **flags}, env={})
    store = SQLiteSignalStore(settings_.db)
    try:
        engine = Engine(settings_, store)
        engine.hub.queue_size = 1_000_000  # keep every event for the comparison
        live = engine.hub.subscribe()
        assert live is not None
        signals: list[Signal] = []
        engine.add_listener(signals.append)
        yield Offline(engine, store, signals, live)
    finally:
        store.close()


@dataclasses.dataclass(frozen=True)
class Read:
    """The frames of one network read and their local receive time (0: not measured)."""

    frames: list[bytes]
    recv_ns: int


def cut_into_reads(
    stream: Sequence[bytes], sizes: Sequence[int], delays_ms: Sequence[int]
) -> list[Read]:
    """``stream`` cut into reads of ``sizes`` (cycled); each read is received ``delay_ms``
    (cycled; negative: a clock behind the exchange's) after its latest trade time so far,
    0 meaning no receive time."""
    reads = []
    latest_ms = 0
    pos = 0
    for size, delay in zip(itertools.cycle(sizes), itertools.cycle(delays_ms)):
        if pos >= len(stream):
            break
        frames = list(stream[pos : pos + size])
        pos += size
        times = [t for t in map(_trade_time_ms, frames) if t is not None]
        latest_ms = max([latest_ms, *times])
        recv_ns = 0 if delay == 0 else (latest_ms + delay) * 1_000_000 + 123_456
        reads.append(Read(frames, recv_ns))
    return reads


def play(
    reads: Sequence[Read], symbols: str = "BTCUSDT", **flags: object
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Play ``reads`` into one engine read by read and into another frame by frame (each
    frame with its read's receive time); what a user sees of each."""
    with offline_engine(symbols, **flags) as batched, offline_engine(symbols, **flags) as single:
        for read in reads:
            shutdown = batched.engine.handle_frames(read.frames, read.recv_ns)
            expected = [single.engine.handle_frame(f, read.recv_ns) for f in read.frames]
            assert shutdown == any(expected), "a shutdown notice is reported for its read"
        # the batch path adds each read's lags exactly (integer µs); one by one, floats
        # add up rounding errors: the same sums to within those
        assert batched.lag_sums() == pytest.approx(single.lag_sums(), rel=1e-12, abs=1e-6)
        return batched.seen(), single.seen()


def assert_same_outcome(reads: Sequence[Read], symbols: str = "BTCUSDT") -> dict[str, Any]:
    """Every observable outcome of :func:`play` is the same both ways (and returned)."""
    got, want = play(reads, symbols)
    for key in want:
        assert got[key] == want[key], key
    return got


def of_symbol(seen: dict[str, Any], symbol: str) -> dict[str, Any]:
    """What :meth:`Offline.seen` shows of one symbol, in its own order; the rest of the
    status (totals) as well, but not how events of different symbols interleave."""

    def mine(data: bytes) -> bool:
        return bool(msgspec.json.decode(data)["symbol"] == symbol)

    status = dict(seen["status"])
    status["recent_gaps"] = [g for g in status["recent_gaps"] if g["symbol"] == symbol]
    return {
        "signals": [s for s in seen["signals"] if s.symbol == symbol],
        "live events": [(kind, data) for kind, _, data in seen["live events"] if mine(data)],
        "status": status,
        "gap records": [g for g in seen["gap records"] if g.symbol == symbol],
        "bars": seen["bars"][symbol],
        "lag counts": seen["lag counts"][symbol],
        "last seq": seen["last seq"],
        "latest": seen["latest"],
    }


# -- the properties ----------------------------------------------------------------------


PERTURBATIONS = (
    "malformed",
    "control",
    "shutdown",
    "resend",
    "drop",
    "swap",
    "foreign",
    "raw",
    "lowercase",
)


@st.composite
def perturbed(draw: st.DrawFn, base: Sequence[bytes]) -> list[bytes]:
    """``base`` with a few of :data:`PERTURBATIONS` applied at drawn places."""
    stream = list(base)
    for kind in draw(st.lists(st.sampled_from(PERTURBATIONS), max_size=8)):
        at = draw(st.integers(0, len(stream) - 1))
        if kind == "malformed":
            stream.insert(at, draw(st.sampled_from(MALFORMED)))
        elif kind == "control":
            stream.insert(at, draw(st.sampled_from(CONTROLS)))
        elif kind == "shutdown":
            stream.insert(at, SHUTDOWN)
        elif kind == "resend":  # a new connection re-sends frames already received
            start = draw(st.integers(max(0, at - 600), at))
            count = draw(st.integers(1, 400))
            stream[at:at] = stream[start : min(start + count, at)]
        elif kind == "drop":  # a run lost (a gap, abandoned offline)
            del stream[at : at + draw(st.integers(1, 300))]
        elif kind == "swap" and at + 1 < len(stream):  # out of order
            stream[at], stream[at + 1] = stream[at + 1], stream[at]
        elif kind == "foreign":  # a trade of a symbol the engine does not follow
            stream.insert(at, _retag(base[at % len(base)], "ETHBTC", -1_000_000_000))
        elif kind == "raw":  # the same trade without the combined-stream wrapper
            stream[at] = _raw(stream[at])
        elif kind == "lowercase":  # a symbol in lower case still names the symbol
            stream[at] = stream[at].replace(b'"s":"BTCUSDT"', b'"s":"btcusdt"')
    return stream


read_sizes = st.lists(
    st.one_of(
        st.integers(1, BATCH_FROM - 1),  # a few frames: frame by frame
        st.integers(BATCH_FROM, 700),  # the batch path
        st.integers(1024, 1600),  # a long stall's backlog: numpy kernels too
    ),
    min_size=1,
    max_size=30,
).map(lambda sizes: sizes if max(sizes) >= BATCH_FROM else [*sizes, 300])
delays = st.lists(
    st.one_of(st.integers(1, 6000), st.just(0), st.integers(-50, -1)), min_size=1, max_size=8
)


@pytest.mark.slow  # a minute of examples: CI runs it, `make check` leaves it out
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), sizes=read_sizes, delays_ms=delays)
def test_any_cut_into_reads_ends_as_frame_by_frame(
    data: st.DataObject, sizes: list[int], delays_ms: list[int], btc_frames: list[bytes]
) -> None:
    stream = data.draw(perturbed(btc_frames[:PREFIX]), label="stream")
    assert_same_outcome(cut_into_reads(stream, sizes, delays_ms))


@pytest.mark.slow
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), sizes=read_sizes, delays_ms=delays)
def test_two_symbols_interleaved_end_as_frame_by_frame(
    data: st.DataObject, sizes: list[int], delays_ms: list[int], btc_frames: list[bytes]
) -> None:
    # ETHUSDT: a later stretch of the recording under another name and other ids, mixed
    # into the BTCUSDT trades in a drawn order (so reads hold runs of both)
    btc = btc_frames[:2500]
    eth = [_retag(f, "ETHUSDT", -2_000_000_000) for f in btc_frames[5000:7500]]
    rnd = random.Random(data.draw(st.integers(0, 2**32), label="interleaving seed"))
    longest = data.draw(st.sampled_from([1, 8, 400]), label="longest run of one symbol")
    sides: list[int] = []
    left = [len(btc), len(eth)]
    while left[0] or left[1]:
        side = rnd.randrange(2) if left[0] and left[1] else int(left[1] > 0)
        run = min(left[side], rnd.randint(1, longest))
        sides += [side] * run
        left[side] -= run
    sources = [iter(btc), iter(eth)]
    clean = [next(sources[side]) for side in sides]
    stream = data.draw(perturbed(clean), label="stream")
    got, want = play(cut_into_reads(stream, sizes, delays_ms), "BTCUSDT,ETHUSDT")
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert of_symbol(got, symbol) == of_symbol(want, symbol), symbol
    # and how the two symbols' signals and gaps interleave (seq numbers, live events)
    for key in want:
        assert got[key] == want[key], key
    if stream == clean:
        expected = reference_spikes(clean)
        assert {s for s, _ in expected} == {"BTCUSDT", "ETHUSDT"}
        assert [(s.symbol, s.trade_id) for s in got["signals"]] == expected


def test_whole_recording_in_reads_of_300_gives_the_reference_spikes(
    btc_frames: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    batched_trades = 0
    process_batch = SymbolState.run_batch

    def counting(self: SymbolState, batch: TradeBatch) -> list[Signal]:
        nonlocal batched_trades
        batched_trades += len(batch)
        return process_batch(self, batch)

    monkeypatch.setattr(SymbolState, "run_batch", counting)
    reads = cut_into_reads(btc_frames, [300], [2])
    with offline_engine() as offline:
        for read in reads:
            assert not offline.engine.handle_frames(read.frames, read.recv_ns)
        expected = reference_spikes(btc_frames)
        assert len(expected) > 100
        assert [(s.symbol, s.trade_id) for s in offline.signals] == expected
        status = offline.engine.status()
        assert status.frames == len(btc_frames)
        assert status.malformed_frames == {}
        assert status.ignored_frames == 0
        btc = status.symbols["BTCUSDT"]
        assert btc.trades == len(btc_frames)
        assert (btc.gaps, btc.duplicates_dropped, btc.gap_records) == (0, 0, 0)
        assert btc.signals == len(expected)
        lag = offline.engine.lag_histograms()["BTCUSDT"]
        assert sum(lag.counts) == len(btc_frames)
        bars = offline.engine.bars("BTCUSDT")
        assert sum(bar.trades for bar in bars) == len(btc_frames)
    # every read took the batch path (66 of 300 frames, then one of 104)
    assert batched_trades == len(btc_frames)


def test_a_malformed_frame_sends_its_read_frame_by_frame_and_costs_only_itself(
    btc_frames: list[bytes],
) -> None:
    frames = btc_frames[:1000]
    reads = [
        Read([*frames[:400], b"[]", *frames[400:800]], 1),
        Read([*frames[800:], SHUTDOWN], 1),
    ]
    got = assert_same_outcome(reads)
    status = got["status"]
    assert status["frames"] == 1002
    assert status["malformed_frames"] == {"bad_schema": 1}
    assert status["symbols"]["BTCUSDT"]["trades"] == 1000
    assert [int(i.rsplit(":", 1)[1]) for i in got["signal ids"]] == [
        t for _, t in reference_spikes(frames)
    ]


def test_a_gap_inside_a_read_is_recorded_as_one_by_one(btc_frames: list[bytes]) -> None:
    frames = btc_frames[:3000]
    lost = frames[1000:1100]
    stream = frames[:1000] + frames[1100:]
    got = assert_same_outcome(cut_into_reads(stream, [500], [5]))
    (record,) = got["gap records"]
    first, last = (json.loads(f)["data"]["t"] for f in (lost[0], lost[-1]))
    assert (record.first_id, record.last_id, record.missing) == (first, last, 100)
    assert got["status"]["symbols"]["BTCUSDT"]["gap_records"] == 1
    assert [kind for kind, _, _ in got["live events"]].count("gap") == 1


def _trade(symbol: str, trade_id: int, qty: str) -> bytes:
    return (
        f'{{"stream":"{symbol.lower()}@trade","data":{{"e":"trade","E":1723161255343,'
        f'"s":"{symbol}","t":{trade_id},"p":"61837.63","q":"{qty}","T":1723161255342,'
        f'"m":true}}}}'
    ).encode()


def test_a_gap_does_not_reorder_signals_across_symbols() -> None:
    warm = [_trade(s, i, "1") for s in ("BTCUSDT", "ETHUSDT") for i in (1, 2)]
    read = [
        _trade("BTCUSDT", 4, "1"),  # trade 3 was lost: a gap, abandoned (no REST offline)
        _trade("BTCUSDT", 5, "1"),
        _trade("BTCUSDT", 6, "9"),  # a spike once the window has warmed up again
        _trade("ETHUSDT", 3, "9"),  # then a spike of the other symbol
    ]
    reads = [Read(warm, 0), Read(read, 0)]
    got, want = play(reads, "BTCUSDT,ETHUSDT", window=2, threshold="2")
    assert [s.id.split(":", 2)[1] for s in want["signals"]] == ["BTCUSDT", "ETHUSDT"]
    assert got["signal ids"] == want["signal ids"]
    assert got["live events"] == want["live events"]


def test_a_failure_processing_one_read_costs_that_read_only(
    btc_frames: list[bytes], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # a bug in detection (here: the third batch raises) must not stop the stream, nor
    # lose more than the trades it was processing
    calls = 0
    process_batch = SymbolState.run_batch

    def failing_once(self: SymbolState, batch: TradeBatch) -> list[Signal]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("a detector bug")
        return process_batch(self, batch)

    monkeypatch.setattr(SymbolState, "run_batch", failing_once)
    reads = cut_into_reads(btc_frames[:3000], [300], [2])
    with offline_engine() as offline:
        for read in reads:
            offline.engine.handle_frames(read.frames, read.recv_ns)  # never raises
        btc = offline.engine.status().symbols["BTCUSDT"]
        assert btc.trades == 3000 - 300  # every read but the failed one went through
    assert calls == len(reads)
    assert "processing 300 trades failed" in caplog.text
