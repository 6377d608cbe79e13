"""Clock skew named and corrected: the local store's clock shifted 20 minutes (it refuses signatures more than
15 minutes off, with its own Date), and a server whose Date is far away that refuses every signature."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from async_uploader.core.clock import describe_skew, server_offset, skew_offset
from async_uploader.core.config import ServiceConfig
from async_uploader.core.errors import ClockSkewError
from async_uploader.edge.client import OmicsClient
from async_uploader.edge.signing import CredentialSource, Signer
from async_uploader.edge.transport import MockTransport, Response, SentRequest
from async_uploader.emulator import LocalStore, StoreOptions
from tests.conftest import run_cli_process
from tests.helpers import gzip_like, upload_argv


def _date(offset: float) -> dict[str, str]:
    return {"Date": email.utils.formatdate(time.time() + offset, usegmt=True)}


def test_the_offset_and_its_words() -> None:
    now = time.time()
    assert abs(server_offset(_date(-1200), now) + 1200) < 2  # type: ignore[operator]
    assert server_offset({}, now) is None and server_offset({"date": "yesterday"}, now) is None
    assert describe_skew(-1200) == "your clock is 20 minutes ahead of the service"
    assert describe_skew(1260) == "your clock is 21 minutes behind the service"
    assert describe_skew(-90) == "your clock is 90 seconds ahead of the service"
    expired = "Signature expired: 20261201T120000Z is now earlier than 20261201T121500Z (20261201T122000Z - 5 min.)"
    assert skew_offset("InvalidSignatureException", expired, _date(1200), now) is not None
    assert skew_offset("AccessDeniedException", "Signature expired: X", _date(-1200), now) is not None
    assert skew_offset("RequestTimeTooSkewed", "", _date(600), now) is not None
    # a real permission problem, or a clock only a little off, is not blamed on the clock
    assert skew_offset("AccessDeniedException", "User is not authorized", _date(-1200), now) is None
    assert skew_offset("InvalidSignatureException", expired, _date(60), now) is None


def _argv(url: str, tmp_path: Path) -> list[str]:
    source = gzip_like(tmp_path / "r1.fq.gz", 150_000)
    return upload_argv(url, source, extra=("--part-size", "64KiB", "--no-checkpoint", "--json"))


async def test_a_clock_20_minutes_ahead_is_named_and_corrected(tmp_path: Path, cli_env: dict[str, str]) -> None:
    async with LocalStore(StoreOptions(clock_offset=-1200.0)) as store:
        run = await run_cli_process(_argv(store.url, tmp_path), env=cli_env)
        assert run.returncode == 0, run.stderr
        refused = [e for e in store.requests if e["error_code"] == "AccessDeniedException"]
    assert len(refused) == 1  # only the first request: every later one is signed at the service's time
    [warning] = run.stderr_lines
    assert "your clock is 20 minutes ahead of the service" in warning and "NTP" in warning, warning
    assert json.loads(run.stdout)["retries"] >= 1


async def test_a_small_skew_is_left_alone(tmp_path: Path, cli_env: dict[str, str]) -> None:
    async with LocalStore(StoreOptions(clock_offset=180.0)) as store:
        run = await run_cli_process(_argv(store.url, tmp_path), env=cli_env)
        assert run.returncode == 0, run.stderr
    assert run.stderr_lines == [] and not any(e["error_code"] for e in store.requests if e["operation"] != "Unknown")


@pytest.fixture
async def refusing_server() -> AsyncIterator[tuple[str, list[str]]]:
    """A server 20 minutes ahead that refuses every signature as expired (the service's own words and code)."""
    dates: list[str] = []

    async def refuse(request: web.Request) -> web.Response:
        headers = {"x-amzn-ErrorType": "InvalidSignatureException", **_date(1200)}
        dates.append(request.headers.get("X-Amz-Date", "-"))
        body = {
            "message": f"Signature expired: {request.headers.get('X-Amz-Date')} is now earlier than the service time"
        }
        return web.json_response(body, status=403, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", dates
    finally:
        await runner.cleanup()


async def test_a_refusal_after_the_correction_says_which_way_the_clock_is_off(
    refusing_server: tuple[str, list[str]], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    url, dates = refusing_server
    run = await run_cli_process(_argv(url, tmp_path), env=cli_env)
    assert run.returncode == 2, run.stderr
    warning, error = run.stderr_lines
    assert "your clock is 20 minutes behind the service" in warning
    assert error.startswith("async-uploader: error: ") and "your clock is 20 minutes behind the service" in error
    assert "credentials" not in error, error
    signed = [d for d in dates if d != "-"]
    assert len(signed) == 2  # the first try, and one corrected try 20 minutes later; no more
    first, second = (time.mktime(time.strptime(d, "%Y%m%dT%H%M%SZ")) for d in signed)
    assert 1190 <= second - first <= 1230


async def test_requests_signed_before_the_correction_are_retried_not_failed() -> None:
    """Many requests in flight when the clock is found off: the first refusal corrects it, the others only retry."""
    arrived = asyncio.Event()
    seen: list[SentRequest] = []

    async def refuse(request: SentRequest) -> Response:
        seen.append(request)
        if len(seen) == 3:
            arrived.set()
        await arrived.wait()  # all three are signed before any answer
        body = json.dumps({"message": "Signature expired: too old"}).encode()
        return Response(403, {"x-amzn-ErrorType": "InvalidSignatureException", **_date(-1200)}, body)

    signer = Signer(CredentialSource.static("AKID", "secret"), "us-east-1")
    client = OmicsClient(
        ServiceConfig(endpoint_url="http://store.test"), transport=MockTransport(refuse), signer=signer
    )
    results = await asyncio.gather(*(client.list_uploads("1234567890") for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, ClockSkewError) and r.retryable for r in results), results
    assert abs(signer.clock_offset + 1200) < 5
    [again] = await asyncio.gather(client.list_uploads("1234567890"), return_exceptions=True)
    assert isinstance(again, ClockSkewError) and not again.retryable  # signed corrected, refused anyway
