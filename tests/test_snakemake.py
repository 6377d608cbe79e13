"""The shipped Snakemake workflow, run locally with two cores against the local store holding the service's quotas."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

import async_uploader
from async_uploader import RateLimits, ServiceConfig, Source, UploadConfig, Uploader
from async_uploader.emulator import LocalStore, StoreOptions
from async_uploader.engine.batch import read_manifest
from tests.helpers import fastq_gz

pytest.importorskip("snakemake")

STORE_ID = "1234567890"
KIB = 1024
SNAKEFILE = Path(async_uploader.__file__).parent / "workflows" / "Snakefile"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
CONTROL_OPERATIONS = {
    "CreateMultipartReadSetUpload",
    "CompleteMultipartReadSetUpload",
    "AbortMultipartReadSetUpload",
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(90),
    pytest.mark.skipif(not SNAKEMAKE.exists() and shutil.which("snakemake") is None, reason="no snakemake"),
]


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in environment(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def environment(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        ASYNC_UPLOADER_HOME=str(tmp_path / "home"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)
    return env


async def snakemake(tmp_path: Path, *args: str) -> tuple[int, str]:
    command = str(SNAKEMAKE) if SNAKEMAKE.exists() else str(shutil.which("snakemake"))
    process = await asyncio.create_subprocess_exec(
        command,
        "--cores",
        "2",
        "--resources",
        "uploads=2",
        "-s",
        str(SNAKEFILE),
        "--directory",
        str(tmp_path / "work"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=environment(tmp_path),
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=100)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def test_workflow_uploads_every_row_and_reruns_nothing(tmp_path: Path) -> None:
    reads = tmp_path / "reads"
    reads.mkdir()
    lines = ["source1\tsource2\tsourceFileType\tsubjectId\tsampleId\tname"]
    for i in range(3):
        for mate in (1, 2):
            (reads / f"s{i}_{mate}.fq.gz").write_bytes(fastq_gz(5 * KIB + i * 100 + mate, seed=10 * i + mate))
        lines.append(f"s{i}_1.fq.gz\ts{i}_2.fq.gz\tFASTQ\tsubject-{i}\tsample-{i}\tsnake-{i}")
    manifest = reads / "manifest.tsv"
    manifest.write_text("\n".join(lines) + "\n")
    (tmp_path / "work").mkdir()
    options = StoreOptions(data_dir=tmp_path / "store", quotas=StoreOptions.service_quotas())
    async with LocalStore(options) as store:
        settings = [
            "--config",
            f"manifest={manifest}",
            f"store_id={STORE_ID}",
            f"endpoint_url={store.url}",
            "region=us-east-1",
            "part_size=2048",
            f"outdir={tmp_path / 'out'}",
        ]
        code, output = await snakemake(tmp_path, *settings)
        assert code == 0, output
        rows = {row.key(STORE_ID): row for row in read_manifest(manifest)}
        results = {key: json.loads((tmp_path / "out" / f"{key}.json").read_text()) for key in rows}
        service = ServiceConfig(endpoint_url=store.url, region="us-east-1")
        async with Uploader(service=service, config=UploadConfig(rates=RateLimits.unlimited())) as up:
            for key, row in rows.items():
                result = results[key]
                for source in (Source.SOURCE1, Source.SOURCE2):
                    path = row.read_set.sources[source]
                    assert isinstance(path, Path)
                    parts = int(result["parts"][source.value])
                    assert parts == 3
                    chunks = [
                        await up.client.download_part(STORE_ID, result["readSetId"], source, n)
                        for n in range(1, parts + 1)
                    ]
                    assert b"".join(chunks) == path.read_bytes()
        assert created(store) == 3
        # Every job draws from the shared budget file: Create and Complete are serialized across jobs, so the
        # store, holding the service's quotas, never sees two control requests within a second, nor throttles.
        control = starts(store, CONTROL_OPERATIONS)
        assert len(control) == 6
        assert most_in_window(control, 0.95) == 1, [round(b - a, 3) for a, b in itertools.pairwise(control)]
        assert [r for r in store.requests if r["status"] == 429] == []
        budget = tmp_path / "work" / ".async-uploader" / "rate-budget.json"
        assert json.loads(budget.read_text())["kinds"]["control"]["reserved"] == 6
        code, output = await snakemake(tmp_path, *settings)
        assert code == 0, output
        assert "Nothing to be done" in output
        assert created(store) == 3


def starts(store: LocalStore, operations: set[str]) -> list[float]:
    """Server-side start times (finish time minus duration) of the requests of ``operations``."""
    return sorted(r["time"] - r["duration_ms"] / 1000.0 for r in store.requests if r["operation"] in operations)


def most_in_window(times: list[float], window: float) -> int:
    """The most starts within any ``window`` seconds."""
    best, first = 0, 0
    for last, moment in enumerate(times):
        while moment - times[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best


def created(store: LocalStore) -> int:
    return sum(1 for r in store.requests if r["operation"] == "CreateMultipartReadSetUpload" and r["status"] == 200)
