"""Smoke test of the benchmark harness: `benchmarks/run.py --quick --only bulk` end to end, results written.

Skipped when the bench extras (aws-healthomics-tools, aiobotocore, matplotlib) are not installed. No performance
is asserted: only that every client ran and the results files exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("omics.transfer.manager", reason="bench extra not installed (aws-healthomics-tools)")
pytest.importorskip("aiobotocore", reason="bench extra not installed (aiobotocore)")
pytest.importorskip("matplotlib", reason="bench extra not installed (matplotlib)")

ROOT = Path(__file__).resolve().parent.parent


def quick_bench(tmp_path: Path, scenario: str) -> Path:
    """``benchmarks/run.py --quick --only SCENARIO`` as its own process, without AWS settings: the results folder."""
    out = tmp_path / "results"
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    argv = ["--quick", "--only", scenario, "--out", str(out), "--data-dir", str(tmp_path / "data"), "--timeout", "120"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), *argv],
        capture_output=True,
        text=True,
        timeout=220,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.timeout(240)
def test_quick_bulk_writes_results(tmp_path: Path) -> None:
    out = quick_bench(tmp_path, "bulk")
    text = (out / "RESULTS.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| async_uploader (defaults) |")]
    assert len(rows) == 1  # its row in the plain-HTTP table
    assert "| async_uploader (defaults) over TLS |" in text and "## Over TLS, every scenario" in text
    assert (out / "bulk_throughput.png").stat().st_size > 1000
    results = json.loads((out / "results.json").read_text())
    assert results["stamp"]["mode"] == "quick"
    assert results["stamp"]["nproc"] == os.cpu_count()
    (bulk,) = results["sections"]
    assert bulk["key"] == "bulk"
    runs = bulk["runs"]
    labels = {run["label"] for run in runs}
    assert {"TransferManager (defaults)", "boto3 loop", "aiobotocore + semaphore"} <= labels
    assert {"async_uploader (defaults) over TLS", "TransferManager (defaults) over TLS"} <= labels
    assert any(label.startswith("ceiling") for label in labels)
    failed = [(run["label"], run["error"]) for run in runs if not run["ok"]]
    assert not failed
    fastq = [run for run in runs if run["group"].startswith("FASTQ.gz ")]
    assert {run["label"] for run in fastq} == {
        "async_uploader (defaults: verified) over TLS",
        "async_uploader (--no-verify) over TLS",
        "TransferManager (defaults) over TLS",
    }
    assert [run["report"]["verified"] for run in fastq if "verified)" in run["label"]] == [1]
    assert "where the time goes" in text and "| verification after ACTIVE s |" in text
    for run in runs:
        assert run["bytes"] == (fastq[0]["bytes"] if run in fastq else 2 * 8 * 1024 * 1024)
        assert run["cpu"] > 0
        assert run["rss_kib"] > 1024


@pytest.mark.timeout(240)
def test_quick_batch_runs_every_client(tmp_path: Path) -> None:
    out = quick_bench(tmp_path, "batch")
    (batch,) = json.loads((out / "results.json").read_text())["sections"]
    assert batch["key"] == "batch"
    runs = {run["label"]: run for run in batch["runs"]}
    assert not [(label, run["error"]) for label, run in runs.items() if not run["ok"]]
    ours = [run for label, run in runs.items() if label.startswith("async_uploader batch")]
    assert len(ours) == 2  # verified and waited for, and --no-wait
    assert all(run["report"]["done"] == 3 for run in ours)
    (theirs,) = [run for label, run in runs.items() if label.startswith("TransferManager in a loop")]
    assert theirs["report"]["readSets"] == 3
    text = (out / "RESULTS.md").read_text()
    assert "## A batch at the pace of the quotas" in text and "÷ TransferManager, wall" in text


@pytest.mark.timeout(240)
def test_quick_verify_writes_the_stage_store_and_compression_tables(tmp_path: Path) -> None:
    out = quick_bench(tmp_path, "verify")
    (verify,) = json.loads((out / "results.json").read_text())["sections"]
    tables = {table["title"].split(",")[0].split(" (")[0]: table for table in verify["tables"]}
    stages = tables["The verifier against its stages"]
    assert [row[0].split()[0] for row in stages["rows"]] == ["demo", "four-bin"]
    ratios = [float(row[2].rstrip("×")) for row in stages["rows"]]
    assert 1.5 < ratios[0] < 2.3 and ratios[1] > 3.0  # the two data sets the issue names: ~1.8× and ~4×
    assert all(" × " in row[8] for row in stages["rows"])  # the verifier over its slowest stage, named
    store = tables["The store's processing after Complete against the client's verifier"]
    assert [row[0] for row in store["rows"]] == ["demo", "four-bin"] and all(
        row[5] == "≤ 1.25×" for row in store["rows"]
    )
    compression = tables["Compression on the fly"]
    assert [row[0] for row in compression["rows"]] == ["demo", "four-bin"]
    assert all(float(row[5]) > 0 and float(row[6]) > 0 for row in compression["rows"])  # both uploads ran
    assert not [run for run in verify["runs"] if not run["ok"]]
    assert "Scenario failed" not in (out / "RESULTS.md").read_text()
    kept = sorted(path.name for path in (tmp_path / "data" / "pipeline").glob("*.fastq.gz"))
    assert len(kept) == 4 and all(name.endswith(("-R1.fastq.gz", "-R2.fastq.gz")) for name in kept)  # made once
