"""The --report file under --dask: the same rows, outcomes and columns as on one machine, through the CLI."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from async_uploader.cli.report import COLUMNS
from async_uploader.emulator import LocalStore
from tests.conftest import run_cli_process
from tests.test_batch_report import STORE, _reads

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


async def test_the_report_under_dask(local_store: LocalStore, tmp_path: Path, cli_env: dict[str, str]) -> None:
    manifest = _reads(tmp_path, 2)
    report = tmp_path / "report.csv"
    argv = ["batch", str(manifest), "--store-id", STORE, "--endpoint-url", local_store.url, "--part-size", "64KiB"]
    argv += ["--checkpoint-dir", str(tmp_path / "ck"), "--report", str(report), "--dask", "local:1"]
    run = await run_cli_process(argv, env=cli_env, limit=150)
    assert run.returncode == 0, run.stderr
    assert [line.split()[:3] for line in run.stdout.splitlines()[:2]] in (
        [["row", "1", "read-set-1"], ["row", "2", "read-set-2"]],
        [["row", "2", "read-set-2"], ["row", "1", "read-set-1"]],
    )
    reader = csv.DictReader(io.StringIO(report.read_text()))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    rows = list(reader)
    assert [(r["row"], r["outcome"], r["verified"], r["bytes"]) for r in rows] == [
        ("1", "done", "true", "150000"),
        ("2", "done", "true", "150000"),
    ]
