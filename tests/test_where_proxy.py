"""Proxies as botocore has them: the choice for real AWS hosts (pure, and through the transport), and uploads through
a real proxy process (proxy.py) whose access log is the evidence, for an http endpoint and an https one (CONNECT)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from async_uploader.core.proxy import bypasses, proxy_for, redact
from async_uploader.edge.transport import HttpTransport
from async_uploader.emulator import LocalStore, StoreOptions
from tests.conftest import closed_port, run_cli_process
from tests.helpers import HttpProxy, TlsFront, gzip_like, upload_argv

USER = "uploader"
PASSWORD = "Pr0xyPassMustNotLeak"
STORAGE = "https://storage-omics.us-east-1.amazonaws.com/sequencestore/1234567890/upload/1/part"
CONTROL = "https://control-storage-omics.eu-west-1.amazonaws.com/sequencestore/1234567890/upload"
PROXY_VARIABLES = ("no_proxy", "http_proxy", "https_proxy", "all_proxy")


def test_the_real_service_hosts_take_the_https_proxy_with_its_credentials() -> None:
    env = {"HTTPS_PROXY": "http://lab%5Cuser:p%40ss@proxy.corp.example:3128", "HTTP_PROXY": "http://other:8080"}
    for url in (STORAGE, CONTROL):
        proxy = proxy_for(url, env)
        assert proxy is not None and proxy.url == "http://proxy.corp.example:3128"
        assert proxy.authorization == "Basic " + base64.b64encode(b"lab\\user:p@ss").decode()
        assert proxy.shown == "http://lab%5Cuser:***@proxy.corp.example:3128"
        assert "p%40ss" not in repr(proxy) and "p@ss" not in repr(proxy)
    # an https URL never falls back to HTTP_PROXY; an http one takes it; a scheme-less proxy is http://
    assert proxy_for(STORAGE, {"HTTP_PROXY": "http://other:8080"}) is None
    plain = proxy_for("http://store.internal:8080/x", {"http_proxy": "proxy.corp.example:3128"})
    assert plain is not None and plain.url == "http://proxy.corp.example:3128" and plain.authorization is None


def test_lower_case_wins_and_set_empty_unsets() -> None:
    both = {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:2"}
    assert proxy_for(STORAGE, both).url == "http://lower:1"  # type: ignore[union-attr]
    assert proxy_for(STORAGE, {"https_proxy": "", "HTTPS_PROXY": "http://upper:2"}) is None
    cgi = {"HTTP_PROXY": "http://from-a-header:1", "REQUEST_METHOD": "GET"}
    assert proxy_for("http://store.internal/", cgi) is None


@pytest.mark.parametrize(
    ("no_proxy", "url", "direct"),
    [
        (".amazonaws.com", STORAGE, True),
        ("amazonaws.com", CONTROL, True),
        ("us-east-1.amazonaws.com", STORAGE, True),
        ("us-east-1.amazonaws.com", CONTROL, False),
        ("amazonaws.com", "https://storage-omics.us-east-1.xamazonaws.com/", False),
        ("storage-omics.us-east-1.amazonaws.com:443", STORAGE, False),  # the URL names no port
        ("store.internal:8080", "http://store.internal:8080/x", True),
        ("store.internal:8080", "http://store.internal:9090/x", False),
        ("localhost, 10.0.0.0/8", "https://10.20.30.40:8443/", True),
        ("10.0.0.0/8", "https://11.0.0.1/", False),
        ("10.0.0.0/8", "https://ten.example/", False),
        ("192.168.1.7", "http://192.168.1.7:80/", True),
        ("*", STORAGE, True),
        ("", STORAGE, False),
    ],
)
def test_no_proxy_rules(no_proxy: str, url: str, direct: bool) -> None:
    assert bypasses(url, no_proxy) is direct
    env = {"HTTPS_PROXY": "http://proxy:3128", "HTTP_PROXY": "http://proxy:3128", "NO_PROXY": no_proxy}
    assert (proxy_for(url, env) is None) is direct


def test_the_transport_chooses_per_url_from_the_environment_it_was_given() -> None:
    env = {
        "HTTPS_PROXY": "http://u:secret@proxy.corp.example:3128",
        "NO_PROXY": "control-storage-omics.eu-west-1.amazonaws.com",
    }
    transport = HttpTransport(environ=env)
    chosen = transport.proxy_for(STORAGE)
    assert chosen is not None and chosen.headers()["Proxy-Authorization"].startswith("Basic ")
    assert transport.proxy_for(CONTROL) is None
    assert redact("http://u:secret@proxy:1") == "http://u:***@proxy:1" and redact("http://proxy:1") == "http://proxy:1"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpProxy]:
    with HttpProxy(tmp_path_factory.mktemp("proxy"), auth=f"{USER}:{PASSWORD}") as running:
        yield running


async def _new_lines(proxy: HttpProxy, before: int, wanted: Callable[[list[str]], bool]) -> list[str]:
    """The access-log lines after the first ``before``, once ``wanted`` holds (a line is written per connection)."""
    deadline = time.monotonic() + 10
    while True:
        lines = proxy.access_lines()[before:]
        if wanted(lines) or time.monotonic() > deadline:
            return lines
        await __import__("asyncio").sleep(0.1)


def without_proxies(env: dict[str, str]) -> dict[str, str]:
    """``env`` with no proxy variable in either case (set empty, a lower-case one would unset the upper-case one)."""
    return {name: value for name, value in env.items() if name.lower() not in PROXY_VARIABLES}


async def _upload(cli_env: dict[str, str], url: str, tmp_path: Path, env: dict[str, str]) -> Any:
    source = gzip_like(tmp_path / "r1.fq.gz", 300_000)
    argv = upload_argv(url, source, extra=("--part-size", "64KiB", "--no-checkpoint", "--json"))
    return await run_cli_process(argv, env={**without_proxies(cli_env), **env})


async def test_an_upload_to_an_http_endpoint_goes_through_the_proxy(
    proxy: HttpProxy, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    async with LocalStore(StoreOptions()) as store:
        before = len(proxy.access_lines())
        env = {"HTTP_PROXY": proxy.url(f"{USER}:{PASSWORD}")}
        run = await _upload(cli_env, store.url, tmp_path, env)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["parts"] == {"SOURCE1": 5}
        host = f"127.0.0.1:{store.port}"
        lines = await _new_lines(proxy, before, lambda got: len(got) >= 2)
    # proxy.py writes one line per client connection (naming its first request): parts and the preflight are there
    assert any(f"PUT {host}/sequencestore/1234567890/upload/" in line for line in lines), lines
    assert any(f"GET {host}/ " in line for line in lines), "the preflight did not take the proxy"
    assert PASSWORD not in run.stdout + run.stderr


async def test_an_upload_to_an_https_endpoint_tunnels_through_the_proxy(
    proxy: HttpProxy, tls_store: tuple[TlsFront, Path, LocalStore], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    front, ca_file, store = tls_store
    before = len(proxy.access_lines())
    env = {"HTTPS_PROXY": proxy.url(f"{USER}:{PASSWORD}"), "AWS_CA_BUNDLE": str(ca_file)}
    run = await _upload(cli_env, front.url, tmp_path, env)
    assert run.returncode == 0, run.stderr
    target = front.url.removeprefix("https://")
    lines = await _new_lines(proxy, before, lambda got: any(f"CONNECT {target}" in line for line in got))
    assert front.connections >= 1
    assert any(f"CONNECT {target} " in line for line in lines), lines
    assert not any(" PUT " in line for line in lines), "an https request was forwarded in the clear"
    assert len(store.requests) >= 7  # Create, 5 parts, Complete, metadata: all arrived through the tunnel


async def test_no_proxy_sends_the_store_direct(proxy: HttpProxy, tmp_path: Path, cli_env: dict[str, str]) -> None:
    async with LocalStore(StoreOptions()) as store:
        before = len(proxy.access_lines())
        env = {"http_proxy": proxy.url(f"{USER}:{PASSWORD}"), "no_proxy": "localhost,127.0.0.1"}
        run = await _upload(cli_env, store.url, tmp_path, env)
        assert run.returncode == 0, run.stderr
    await __import__("asyncio").sleep(0.5)
    assert proxy.access_lines()[before:] == []


async def test_a_dead_proxy_fails_the_upload_in_one_line_naming_it(tmp_path: Path, cli_env: dict[str, str]) -> None:
    dead = f"http://{USER}:{PASSWORD}@127.0.0.1:{closed_port()}"
    async with LocalStore(StoreOptions()) as store:
        run = await _upload(cli_env, store.url, tmp_path, {"HTTP_PROXY": dead})
        assert store.requests == []
    assert run.returncode == 75, run.stderr  # the network path may come back: a pipeline retries
    [line] = run.stderr_lines
    assert f"proxy http://{USER}:***@127.0.0.1:" in line and "HTTPS_PROXY" in line, line
    assert "--region" not in line and PASSWORD not in run.stderr + run.stdout
    assert run.seconds < 20


async def test_a_refusing_proxy_is_one_line_and_not_retried(
    proxy: HttpProxy, tls_store: tuple[TlsFront, Path, LocalStore], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    front, ca_file, store = tls_store
    wrong = f"{USER}:not-{PASSWORD}"
    plain = await _upload(cli_env, store.url, tmp_path, {"HTTP_PROXY": proxy.url(wrong)})
    tunnel = await _upload(
        cli_env, front.url, tmp_path, {"HTTPS_PROXY": proxy.url(wrong), "AWS_CA_BUNDLE": str(ca_file)}
    )
    assert store.requests == []
    for run in (plain, tunnel):
        assert run.returncode == 1, run.stderr
        [line] = run.stderr_lines
        assert "407" in line and f"proxy http://{USER}:***@127.0.0.1:{proxy.port}" in line, line
        assert PASSWORD not in run.stderr and run.seconds < 20
