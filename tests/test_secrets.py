"""Credentials never appear in what the tool prints or writes: output, events, debug logs, checkpoints."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from async_uploader.emulator import LocalStore, StoreOptions
from tests.conftest import closed_port, run_cli_process
from tests.helpers import HttpProxy, fastq_gz, upload_argv

ACCESS_KEY = "AKIDLEAKCHECK0001"
SECRET = "sEcReT-VaLuE-must-not-leak-0123456789"
TOKEN = "ToKeN-VaLuE-must-not-leak-9876543210"


def _every_file_under(*roots: Path) -> list[Path]:
    return [path for root in roots if root.exists() for path in root.rglob("*") if path.is_file()]


async def test_no_credential_in_output_events_debug_logs_or_checkpoints(
    tmp_path: Path, run_cli: Callable[..., Awaitable[Any]]
) -> None:
    source = tmp_path / "reads.fastq.gz"
    source.write_bytes(fastq_gz(300_000))
    home = tmp_path / "home"
    checkpoint = tmp_path / "ckpt" / "upload.jsonl"
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": TOKEN,
        "ASYNC_UPLOADER_HOME": str(home),
    }
    options = StoreOptions(data_dir=tmp_path / "store", access_key=ACCESS_KEY, secret_key=SECRET)
    async with LocalStore(options) as store:
        flags = ("--part-size", "64KiB", "--region", "us-east-1")
        common = upload_argv(store.url, source, name="secrets", extra=flags, progress=True)
        ok = await run_cli(*common, "--checkpoint", str(checkpoint), "--debug", "--events", "--json", env=env)
        assert ok.returncode == 0, ok.stderr
        wrong = await run_cli(*common, "--no-checkpoint", "--debug", env={**env, "AWS_SECRET_ACCESS_KEY": SECRET[::-1]})
        assert wrong.returncode == 2, wrong.stderr
    written = [path.read_bytes() for path in _every_file_under(home, checkpoint.parent)]
    assert written, "the upload wrote no checkpoint; the check proves nothing"
    for secret in (SECRET, TOKEN, SECRET[::-1]):
        for text in (ok.stdout, ok.stderr, wrong.stdout, wrong.stderr):
            assert secret not in text
        for content in written:
            assert secret.encode() not in content


PROXY_PASSWORD = "PrOxY-pAsS-must-not-leak-24680"


async def test_no_proxy_password_in_output_events_debug_logs_or_checkpoints(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Through a real proxy (and a dead one), with --debug and --events: the password in the proxy URL never shows."""
    source = tmp_path / "reads.fastq.gz"
    source.write_bytes(fastq_gz(200_000))
    home = Path(cli_env["ASYNC_UPLOADER_HOME"])
    env = {k: v for k, v in cli_env.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    with HttpProxy(tmp_path / "proxy", auth=f"user:{PROXY_PASSWORD}") as proxy:
        async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as store:
            argv = upload_argv(store.url, source, name="proxied", extra=("--part-size", "64KiB"))
            ok = await run_cli_process(
                [*argv, "--debug", "--events"], env={**env, "HTTP_PROXY": proxy.url(f"user:{PROXY_PASSWORD}")}
            )
            dead = f"http://user:{PROXY_PASSWORD}@127.0.0.1:{closed_port()}"
            lost = await run_cli_process([*argv, "--debug", "--no-checkpoint"], env={**env, "HTTP_PROXY": dead})
    assert ok.returncode == 0, ok.stderr
    assert lost.returncode == 75 and "user:***@" in lost.stderr, lost.stderr
    written = [path.read_bytes() for path in _every_file_under(home)]
    assert written, "the upload wrote no checkpoint; the check proves nothing"
    for text in (ok.stdout, ok.stderr, lost.stdout, lost.stderr):
        assert PROXY_PASSWORD not in text
    for content in written:
        assert PROXY_PASSWORD.encode() not in content
