"""One request path: every operation an upload sends, control calls and parts alike, reports a throttled attempt
exactly once, as one ``retry`` event and one retry counted in the statistics and the result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from async_uploader import AccessDeniedError, ServiceConfig, Uploader
from async_uploader.core.protocol import OPERATIONS
from async_uploader.edge.transport import MockTransport, Response, SentRequest
from tests.helpers import LostReply, ScriptedStore, error, fast_config, paired, throttled

pytestmark = pytest.mark.usefixtures("test_credentials")
STORE_ID = "1234567890"
KIB = 1024
LOCAL = ServiceConfig(endpoint_url="http://127.0.0.1:9")  # never dialled: the mock transport answers

NOT_SENT_BY_AN_UPLOAD = {"ListMultipartReadSetUploads", "GetReadSet"}  # the `uploads` command; downloads


class Store(ScriptedStore):
    """The scripted store, also listing the parts of its one upload."""

    def _answer(self, operation: str, request: SentRequest) -> Response:
        if operation != "ListReadSetUploadParts":
            return super()._answer(operation, request)
        source = json.loads(request.body)["partSource"]
        parts = [
            {"partNumber": n, "partSize": len(b), "partSource": s, "checksum": f"c-{s}-{n}-{len(b)}"}
            for (s, n), b in sorted(self.parts.items())
            if s == source
        ]
        return Response(200, {"Content-Type": "application/json"}, json.dumps({"parts": parts}).encode())


async def run(store: Store, tmp_path: Path, **options: Any) -> tuple[list[dict[str, Any]], int, BaseException | None]:
    """One upload of a small paired read set: its events, the retries it counted, and what it raised."""
    events: list[dict[str, Any]] = []
    tmp_path.mkdir(parents=True, exist_ok=True)
    async with Uploader(fast_config(64 * KIB), service=LOCAL, transport=MockTransport(store)) as up:
        handle = up.start(paired(tmp_path, 200 * KIB), store_id=STORE_ID, on_event=events.append, **options)
        try:
            result = await handle
        except Exception as exc:
            return events, handle.statistics().retries, exc
    return events, result.retries, None


async def fresh(store: Store, tmp_path: Path) -> tuple[list[dict[str, Any]], int, BaseException | None]:
    return await run(store, tmp_path, checkpoint=False)


async def resumed(store: Store, tmp_path: Path) -> tuple[list[dict[str, Any]], int, BaseException | None]:
    """A first run fails on a denied part and keeps its checkpoint; the second resumes (and lists the parts)."""
    checkpoint = tmp_path / "upload.ckpt"
    first = Store()
    first.script("UploadReadSetPart", *[error(403, "AccessDeniedException", "no")] * 20)
    first.parts = store.parts
    _, _, failed = await run(first, tmp_path, checkpoint=checkpoint)
    assert isinstance(failed, AccessDeniedError)
    return await run(store, tmp_path, checkpoint=checkpoint)


async def adopted(store: Store, tmp_path: Path) -> tuple[list[dict[str, Any]], int, BaseException | None]:
    """Complete's reply is lost; its retry finds no upload, so the read set it made is looked for and adopted."""
    store.script("CompleteMultipartReadSetUpload", LostReply())
    return await run(store, tmp_path, checkpoint=False)


async def aborted(store: Store, tmp_path: Path) -> tuple[list[dict[str, Any]], int, BaseException | None]:
    """A denied part fails an upload nothing can resume: it is aborted."""
    store.script("UploadReadSetPart", *[error(403, "AccessDeniedException", "no")] * 20)
    return await run(store, tmp_path, checkpoint=False)


SCENARIOS = {
    "CreateMultipartReadSetUpload": fresh,
    "UploadReadSetPart": fresh,
    "CompleteMultipartReadSetUpload": fresh,
    "GetReadSetMetadata": fresh,
    "GetSequenceStore": fresh,
    "ListReadSetUploadParts": resumed,
    "ListReadSets": adopted,
    "AbortMultipartReadSetUpload": aborted,
}


def test_every_operation_an_upload_sends_is_covered() -> None:
    assert set(SCENARIOS) | NOT_SENT_BY_AN_UPLOAD == set(OPERATIONS)


@pytest.mark.parametrize("operation", sorted(SCENARIOS))
async def test_a_throttle_on_each_operation_is_one_retry_event_and_one_counted_retry(
    operation: str, tmp_path: Path
) -> None:
    store = Store()
    baseline_events, baseline, _ = await SCENARIOS[operation](Store(), tmp_path / "baseline")
    store.script(operation, throttled())
    events, counted, failure = await SCENARIOS[operation](store, tmp_path / "throttled")
    retries = [e for e in events if e["event"] == "retry"]
    mine = [e for e in retries if e["operation"] == operation]
    assert len(mine) == 1 and mine[0]["error"] == "ThrottlingException"
    assert counted == baseline + 1 == len(retries)
    assert len([e for e in baseline_events if e["event"] == "retry"]) == baseline
    if operation == "AbortMultipartReadSetUpload":
        assert isinstance(failure, AccessDeniedError) and store.counts[operation] == 2
    else:
        assert failure is None
