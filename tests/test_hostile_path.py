"""What stands between the client and the store, gone wrong, through the CLI against the local store on 127.0.0.1.

A middlebox that passes everything through but answers one operation with 200 and a body that never ends: the
upload ends with one line naming the endpoint and the size, exit 1, in seconds, the process's memory bounded (its
peak RSS, from the kernel's accounting of the finished child). An endpoint URL whose scheme the server does not
speak (https:// to plain HTTP, http:// to TLS) is a setting to fix: exit 2, a hint naming the scheme, no retries.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web
from yarl import URL

from async_uploader.edge.transport import SentRequest
from async_uploader.emulator import LocalStore
from tests.conftest import run_cli_process
from tests.helpers import HttpProxy, TlsFront, gzip_like, operation_of, upload_argv
from tests.store_serve import serve

MIB = 1024 * 1024

_PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "with open(sys.argv[1], 'w') as out:\n"
    "    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(code)\n"
)
"""A wrapper that runs the CLI and writes its peak RSS (KiB, as Linux counts ru_maxrss) to a file."""

_HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "keep-alive", "content-encoding"}


class Middlebox:
    """An HTTP relay on 127.0.0.1 in front of ``store`` that answers ``endless`` with 200 and a body that never
    ends (as fast as the client reads it) and passes every other request through; ``hits`` counts those answers."""

    def __init__(self, store: LocalStore, endless: str) -> None:
        self.store = store
        self.endless = endless
        self.hits = 0
        self.url = ""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Middlebox]:
        app = web.Application(client_max_size=64 * MIB)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with aiohttp.ClientSession(auto_decompress=False) as self.session:
            try:
                yield self
            finally:
                await runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        operation = operation_of(SentRequest(request.method, f"http://relay{request.raw_path}", {}, b""))
        if operation == self.endless:
            self.hits += 1
            return await self.never_ending(request)
        headers = {name: value for name, value in request.headers.items() if name.lower() not in _HOP_BY_HOP}
        async with self.session.request(
            request.method,
            URL(f"{self.store.url}{request.raw_path}", encoded=True),
            headers=headers,  # Host as the client signed it
            data=body,
            allow_redirects=False,
        ) as answer:
            content = await answer.read()
            kept = {name: value for name, value in answer.headers.items() if name.lower() not in _HOP_BY_HOP}
            return web.Response(status=answer.status, headers=kept, body=content)

    @staticmethod
    async def never_ending(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b" " * 65536
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                await response.write(chunk)
        return response


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpProxy]:
    with HttpProxy(tmp_path_factory.mktemp("proxy")) as running:
        yield running


@pytest.mark.parametrize(
    ("operation", "route"),
    [
        ("UploadReadSetPart", "direct"),  # a part's answer: over the client's own sockets
        ("CreateMultipartReadSetUpload", "direct"),  # a control call's: over the same sockets
        ("UploadReadSetPart", "proxy"),  # http:// endpoint, forwarded by the proxy
        ("CreateMultipartReadSetUpload", "proxy over TLS"),  # https:// endpoint, CONNECT through the proxy
    ],
)
async def test_an_answer_that_never_ends_ends_the_upload_with_one_line_and_bounded_memory(
    operation: str,
    route: str,
    request: pytest.FixtureRequest,
    local_store: LocalStore,
    tmp_path: Path,
    cli_env: dict[str, str],
) -> None:
    source = gzip_like(tmp_path / "r1.fq.gz", 1_000_000)
    peak_file = tmp_path / "peak-rss"
    env = dict(cli_env)
    async with Middlebox(local_store, operation).running() as middlebox, contextlib.AsyncExitStack() as stack:
        url = middlebox.url
        if route != "direct":
            env["HTTP_PROXY"] = env["HTTPS_PROXY"] = request.getfixturevalue("proxy").url()
        if route == "proxy over TLS":
            ca = trustme.CA()
            ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
            env["AWS_CA_BUNDLE"] = str(tmp_path / "ca.pem")
            url = (await stack.enter_async_context(TlsFront(URL(middlebox.url).port or 0, ca))).url
        argv = upload_argv(url, source, extra=("--part-size", "64KiB", "--no-checkpoint", "--read-timeout", "5"))
        wrapper = [sys.executable, "-c", _PEAK_RSS, str(peak_file)]
        run = await run_cli_process(argv, env=env, limit=60, wrapper=wrapper)
    assert run.returncode == 1, run.stderr
    [line] = run.stderr_lines
    endpoint = re.escape(f"{URL(url).host}:{URL(url).port}")
    via = r" through the proxy http://127\.0\.0\.1:\d+" if route != "direct" else ""
    assert re.search(rf"{endpoint}{via}: the answer to {operation} went on past 64 KiB", line), line
    assert run.seconds < 30
    peak_mib = int(peak_file.read_text()) / 1024
    print(f"{operation} {route}: exit {run.returncode} in {run.seconds:.1f} s, peak RSS {peak_mib:.0f} MiB: {line}")
    assert peak_mib < 300, f"peak RSS {peak_mib:.0f} MiB"
    # not retried: Create once; each part that met it once at most (16 parts of 64 KiB, some side by side)
    assert middlebox.hits == 1 if operation == "CreateMultipartReadSetUpload" else 1 <= middlebox.hits <= 16


@pytest.mark.parametrize("tls", [False, True], ids=["https-to-serve", "http-to-serve-tls"])
async def test_an_endpoint_url_of_the_wrong_scheme_is_exit_2_naming_the_scheme(
    tls: bool, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    source = gzip_like(tmp_path / "r1.fq.gz", 200_000)
    with serve(tmp_path, *(["--tls"] if tls else [])) as served:
        right = URL(served.url)
        wrong = str(right.with_scheme("http" if tls else "https"))
        env = {**cli_env, "AWS_CA_BUNDLE": str(served.ca_file)} if served.ca_file else cli_env
        argv = upload_argv(wrong, source, extra=("--part-size", "64KiB", "--no-checkpoint"))
        run = await run_cli_process(argv, env=env, limit=60)
        assert run.returncode == 2, run.stderr  # a setting to fix: not 75, "try again later"
        [line] = run.stderr_lines
        scheme = "https://" if tls else "http://"
        assert f"use {scheme} in --endpoint-url" in line and f"{right.host}:{right.port}" in line, line
        assert run.seconds < 15  # not retried
        assert not [entry for entry in map(json.loads, served.log.read_text().splitlines()) if entry]  # nothing sent
        fixed = await run_cli_process(upload_argv(served.url, source, extra=("--part-size", "64KiB")), env=env)
        assert fixed.returncode == 0, fixed.stderr
