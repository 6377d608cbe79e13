"""A property test of the store's request parsing: whatever the path, query, headers and JSON body, the answer
is never a 5xx, every refusal has the service's error shape, and a refused request changes nothing."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Coroutine, Iterator
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from async_uploader.emulator import LocalStore, StoreOptions
from tests.store_raw import FIELDS, STORE_ID, signed_headers

EXAMPLES = 300
T = TypeVar("T")


class ThreadedStore:
    """A LocalStore on a loop of its own thread, so a synchronous test can drive it with http.client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.store = self.call(LocalStore(StoreOptions(processing_delay=0.0)).start())

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def close(self) -> None:
        self.call(self.store.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    def snapshot(self) -> Any:
        """Everything a request could record: uploads, parts, read sets, tokens, completions, upload files."""

        async def take() -> Any:
            state = self.store.state
            stores = {}
            for store_id, store in state.stores.items():
                stores[store_id] = (
                    {
                        u.upload_id: sorted((k, p.checksum, p.size) for k, p in u.parts.items())
                        for u in store.uploads.values()
                    },
                    sorted(store.read_sets),
                    sorted(store.tokens),
                    sorted(store.completed),
                )
            files = sorted(
                str(p.relative_to(self.store.data_dir))
                for p in self.store.data_dir.rglob("*")
                if "readsets" not in p.parts and p.is_file()
            )
            return stores, files

        return self.call(take())


@pytest.fixture(scope="module")
def threaded() -> Iterator[ThreadedStore]:
    store = ThreadedStore()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(scope="module")
def known(threaded: ThreadedStore) -> dict[str, str]:
    """Ids that exist: an upload in progress with a part, and a completed read set."""
    state = threaded.store.state

    async def seed() -> dict[str, str]:
        upload = state.create_upload(STORE_ID, dict(FIELDS))["uploadId"]
        done = state.create_upload(STORE_ID, dict(FIELDS))["uploadId"]
        return {"upload": upload, "done": done}

    ids = threaded.call(seed())
    port = threaded.store.port
    for upload in ids.values():
        send(port, "PUT", part_path(upload) + "?partSource=SOURCE1&partNumber=1", b"@r\nA\n+\nI\n", "UNSIGNED-PAYLOAD")
    listed = json.loads(
        send(port, "POST", f"/sequencestore/{STORE_ID}/upload/{ids['done']}/parts", b'{"partSource":"SOURCE1"}')[2]
    )
    body = json.dumps(
        {"parts": [{"partSource": "SOURCE1", "partNumber": 1, "checksum": listed["parts"][0]["checksum"]}]}
    )
    ids["readset"] = json.loads(
        send(port, "POST", f"/sequencestore/{STORE_ID}/upload/{ids['done']}/complete", body.encode())[2]
    )["readSetId"]
    return ids


def part_path(upload: str) -> str:
    return f"/sequencestore/{STORE_ID}/upload/{upload}/part"


def send(
    port: int,
    method: str,
    target: str,
    body: bytes = b"",
    payload_hash: str | None = None,
    extra: dict[str, str] | None = None,
    sign: bool = True,
) -> tuple[int, dict[str, str], bytes]:
    headers = signed_headers(method, f"http://127.0.0.1:{port}{target}", body, payload_hash) if sign else {}
    headers.update(extra or {})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


# Mostly ids that exist (so requests get past the lookups), sometimes anything.
ids_ = st.sampled_from(["upload", "upload", "upload", "done", "readset", "readset", "store"]) | st.text(max_size=40)
text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
part_entries = st.fixed_dictionaries(
    {},
    optional={
        "partSource": st.sampled_from(["SOURCE1", "SOURCE2", "SOURCE3"]) | json_values,
        "partNumber": st.integers(-2, 10_002) | st.sampled_from(["1", "²", "١", 1.0, 1e308]) | json_values,
        "checksum": text | json_values,
    },
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "sourceFileType": st.sampled_from(["FASTQ", "BAM", "CRAM", "UBAM", "VCF"]) | json_values,
        "subjectId": text | json_values,
        "sampleId": text | json_values,
        "name": text | json_values,
        "referenceArn": st.sampled_from(["arn:x", "arn:", "nope"]) | json_values,
        "clientToken": text | json_values,
        "tags": st.dictionaries(text, text | json_values, max_size=3) | json_values,
        "parts": st.lists(part_entries, max_size=4) | json_values,
        "partSource": st.sampled_from(["SOURCE1", "SOURCE2"]) | json_values,
        "filter": st.fixed_dictionaries(
            {}, optional={"createdAfter": json_values | st.just("2020-01-01T00:00:00Z"), "status": json_values}
        )
        | json_values,
    },
)
query_values = (
    st.integers(-5, 20_000).map(str)
    | st.sampled_from(["²", "SOURCE1", "SOURCE2", "INDEX", "", "eyJvZmZzZXQiOiAxZTk5OX0="])
    | text
)
queries = st.dictionaries(
    st.sampled_from(["partSource", "partNumber", "maxResults", "nextToken", "file", "x"]), query_values, max_size=4
)
paths = st.sampled_from(
    [
        ("POST", "/sequencestore/{store}/upload"),
        ("PUT", "/sequencestore/{store}/upload/{upload}/part"),
        ("POST", "/sequencestore/{store}/upload/{upload}/complete"),
        ("DELETE", "/sequencestore/{store}/upload/{upload}/abort"),
        ("POST", "/sequencestore/{store}/upload/{upload}/parts"),
        ("POST", "/sequencestore/{store}/uploads"),
        ("GET", "/sequencestore/{store}/readset/{readset}/metadata"),
        ("GET", "/sequencestore/{store}/readset/{readset}"),
        ("POST", "/sequencestore/{store}/readsets"),
    ]
    * 5
    + [("GET", "/{store}/{upload}"), ("POST", "/sequencestore/{store}/upload/{upload}")]
)
header_names = st.sampled_from(
    ["x-amz-content-sha256", "Authorization", "X-Amz-Date", "Host", "Content-Type", "X-Other"]
)
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    method, template = draw(paths)
    method = draw(st.sampled_from([method] * 12 + ["GET", "POST", "PUT", "DELETE", "PATCH"]))
    names = {"store": STORE_ID}
    for slot in ("upload", "readset"):
        names[slot] = draw(ids_)
    raw = draw(st.sampled_from(["json", "json", "bytes", "none"]))
    if raw == "json":
        body = json.dumps(draw(bodies | json_values)).encode()
    elif raw == "bytes":
        body = draw(st.binary(max_size=200))
    else:
        body = b""
    return {
        "method": method,
        "template": template,
        "names": names,
        "store_id": draw(st.sampled_from([STORE_ID] * 8 + ["123", "١٢٣٤٥٦٧٨٩٠"])),
        "query": draw(queries),
        "body": body,
        "payload_hash": draw(st.sampled_from([None, None, "UNSIGNED-PAYLOAD", "0" * 64])),
        "sign": draw(st.sampled_from([True] * 9 + [False])),
        "extra": draw(st.sampled_from([{}] * 3) | st.dictionaries(header_names, header_values, max_size=2)),
    }


def test_request_parsing_property(threaded: ThreadedStore, known: dict[str, str]) -> None:
    ran: list[int] = []

    @settings(max_examples=EXAMPLES, deadline=timedelta(seconds=2), derandomize=True, database=None)
    @given(case=requests())
    def check(case: dict[str, Any]) -> None:
        ran.append(1)
        names = {slot: known.get(value, value) for slot, value in case["names"].items()}
        names["store"] = case["store_id"]
        path = case["template"].format(**{k: quote(v, safe="") for k, v in names.items()})
        target = path + ("?" + urlencode(case["query"]) if case["query"] else "")
        before = threaded.snapshot()
        status, headers, body = send(
            threaded.store.port,
            case["method"],
            target,
            case["body"],
            case["payload_hash"],
            {k: v for k, v in case["extra"].items() if k.lower() != "host" or v},
            case["sign"],
        )
        assert status < 500, (status, body[:300])
        if status >= 400:
            assert headers.get("x-amzn-errortype"), headers
            assert headers.get("content-type", "").startswith("application/json"), headers
            message = json.loads(body)
            assert set(message) == {"message"} and isinstance(message["message"], str)
            assert threaded.snapshot() == before, (status, headers.get("x-amzn-errortype"), message)

    check()
    # Bounded, and every example ran (the count is reported in README).
    assert len(ran) >= EXAMPLES
    print(f"{len(ran)} examples")
