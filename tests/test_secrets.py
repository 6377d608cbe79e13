"""Credentials never appear in what the tool prints or writes: output, events, debug logs, checkpoints."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from async_uploader.emulator import LocalStore, StoreOptions
from tests.helpers import fastq_gz, upload_argv

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
        options = ("--part-size", "64KiB", "--region", "us-east-1")
        common = upload_argv(store.url, source, name="secrets", extra=options, progress=True)
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
