"""Progress display and JSON-lines events, fed by hand-made statistics snapshots."""

from __future__ import annotations

import asyncio
import io
import json

import jsonschema
from rich.console import Console

from async_uploader import UploadStatistics
from async_uploader.cli.progress import EventWriter, ProgressBar, format_rate, format_seconds
from async_uploader.core.config import Source
from async_uploader.core.events import EVENT_SCHEMA, progress_event
from async_uploader.engine.monitor import Monitor, Tick

S1, S2 = Source.SOURCE1, Source.SOURCE2


def stats(done: int, *, total: int | None = 1000, paired: bool = True, state: str = "uploading") -> UploadStatistics:
    sources = [S1, S2] if paired else [S1]
    return UploadStatistics(
        state=state,
        bytes_done=dict.fromkeys(sources, done),
        bytes_sent=dict.fromkeys(sources, done),
        bytes_total=dict.fromkeys(sources, total),
        parts_done=dict.fromkeys(sources, done // 100),
        parts_total=dict.fromkeys(sources, None if total is None else total // 100),
        parts_in_flight=dict.fromkeys(sources, 2),
        retries=3,
        throttles=1,
        rate_limit=10.0,
        elapsed=2.0,
        resumed_parts=0,
    )


def test_formatting() -> None:
    assert format_rate(12_345_678) == "12.3 MB/s"
    assert format_seconds(3725) == "1:02:05"
    assert format_seconds(None) == format_seconds(float("nan")) == format_seconds(-1) == "-:--:--"


def test_progress_event_is_json_ready_and_valid() -> None:
    event = progress_event(stats(500), 1e9)
    assert event["event"] == "progress"
    assert event["bytesDone"] == 1000 and event["bytesTotal"] == 2000 and event["fraction"] == 0.5
    assert event["partsDone"] == 10 and event["partsTotal"] == 20 and event["partsInFlight"] == 4
    assert event["retries"] == 3 and event["throttles"] == 1 and event["bytesPerSecond"] == 500.0
    assert event["sources"]["SOURCE2"]["bytesTotal"] == 1000
    jsonschema.validate(json.loads(json.dumps(event)), EVENT_SCHEMA)
    unknown = progress_event(stats(500, total=None, paired=False), 1e9)
    assert unknown["bytesTotal"] is None and unknown["fraction"] is None and unknown["partsTotal"] is None
    jsonschema.validate(unknown, EVENT_SCHEMA)


def test_event_writer_writes_one_line_per_event() -> None:
    stream = io.StringIO()
    writer = EventWriter(stream)
    writer({"event": "part", "source": "SOURCE1", "partNumber": 1})
    writer.write({"event": "retry"})
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["part", "retry"]


def _render(*snapshots: UploadStatistics) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140, color_system=None)
    with ProgressBar(console) as bar:
        for number, snapshot in enumerate(snapshots):
            bar.update(snapshot, now=float(number))
    return out.getvalue()


def test_progress_bar_shows_sources_parts_rate_and_retries() -> None:
    text = _render(stats(0), stats(400), stats(1000, state="done"))
    assert "SOURCE1" in text and "SOURCE2" in text and "total" in text
    assert "40%" in text and "100%" in text
    assert "parts 10/10" in text and "retries 3" in text and "throttles 1" in text
    assert "MB/s" in text and "ETA" in text


def test_progress_bar_single_source_and_unknown_size() -> None:
    text = _render(stats(100, total=None, paired=False), stats(300, total=None, paired=False))
    assert "SOURCE1" in text and "parts 3/?" in text and "retries 3" in text


async def test_monitor_ticks_and_writes_a_final_event() -> None:
    stream = io.StringIO()
    snapshots = iter([stats(n * 100) for n in range(1, 1000)])
    writer = EventWriter(stream)
    async with Monitor(Tick(0.01, lambda: writer.write(progress_event(next(snapshots), 1e9)))):
        await asyncio.sleep(0.1)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(events) >= 2
    assert events[-1]["bytesDone"] > events[0]["bytesDone"]


async def test_monitor_without_ticks_does_nothing() -> None:
    async with Monitor():
        await asyncio.sleep(0)


async def test_a_failing_tick_does_not_break_the_block_and_the_block_error_is_not_wrapped() -> None:
    def boom() -> None:
        raise RuntimeError("display broke")

    try:
        async with Monitor(Tick(0.01, boom)):
            await asyncio.sleep(0.05)
            raise KeyError("the block's own")
    except KeyError as exc:
        assert exc.args == ("the block's own",)
