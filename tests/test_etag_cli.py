"""``async-uploader etag`` prints what the service will report: its lines equal the local store's ETag and counts
for the same files uploaded through the CLI, for gzip, multi-member gzip, BGZF and plain FASTQ, in both families."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from async_uploader.emulator import LocalStore, StoreOptions
from tests.conftest import run_cli_process
from tests.helpers import fastq_text, gzip_members, upload_argv
from tests.store_helpers import active, omics
from tests.test_store_etag import bgzf

FORMS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "multi-member": lambda raw: gzip_members(raw, 4),
    "bgzf": bgzf,
    "plain": lambda raw: raw,
}


def write(tmp_path: Path, form: str, seed: int) -> Path:
    path = tmp_path / f"{form}.fastq"
    path.write_bytes(FORMS[form](fastq_text(3000, seed=seed)))
    return path


@pytest.mark.parametrize(("family", "forms"), [("MD5up", ("gzip", "bgzf")), ("SHA256up", ("multi-member", "plain"))])
async def test_etag_prints_what_the_store_reports(
    tmp_path: Path, cli_env: dict[str, str], family: str, forms: tuple[str, str]
) -> None:
    files = [write(tmp_path, form, seed) for seed, form in enumerate(forms)]
    printed = await run_cli_process(["etag", *map(str, files), "--family", family, "--json"], env=cli_env, limit=60)
    assert printed.returncode == 0, printed.stderr
    local = [json.loads(line) for line in printed.stdout.splitlines()]
    plain = await run_cli_process(["etag", *map(str, files), "--family", family], env=cli_env, limit=60)
    assert plain.stdout.splitlines() == [
        f"{one['digest']}  {one['reads']} reads  {one['bases']} bases  {one['file']}" for one in local
    ]
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store", etag_family=family)) as store:
        run = await run_cli_process(upload_argv(store.url, *files, extra=("--part-size", "64KiB")), env=cli_env)
        assert run.returncode == 0, run.stderr
        meta = await asyncio.to_thread(active, omics(store), run.stdout.split()[-1])
    assert meta["etag"] == {
        "algorithm": f"FASTQ_{family}",
        "source1": local[0]["digest"],
        "source2": local[1]["digest"],
    }
    assert {one["algorithm"] for one in local} == {f"FASTQ_{family}"}
    info = meta["sequenceInformation"]
    assert (info["totalReadCount"], info["totalBaseCount"]) == (
        sum(one["reads"] for one in local),
        sum(one["bases"] for one in local),
    )


async def test_stdin_and_bad_input(tmp_path: Path, cli_env: dict[str, str]) -> None:
    good = write(tmp_path, "gzip", 7)
    [whole] = (await run_cli_process(["etag", str(good)], env=cli_env)).stdout.splitlines()
    run = await run_cli_process(["etag", "-"], env=cli_env, stdin=good.read_bytes())
    assert run.returncode == 0 and run.stdout.splitlines() == [whole.replace(str(good), "-")]
    cut = good.read_bytes()[: good.stat().st_size // 2]
    run = await run_cli_process(["etag", "-", str(good)], env=cli_env, stdin=cut)
    assert run.returncode == 2
    assert run.stderr_lines == ["async-uploader: error: - is truncated: its last gzip member ends early"]
    assert run.stdout.splitlines() == [whole]  # the other files are still summed
    text = tmp_path / "notes.txt"
    text.write_bytes(b"hello\n")
    run = await run_cli_process(["etag", str(text), str(tmp_path / "missing")], env=cli_env)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr_lines == [
        f"async-uploader: error: {text} does not decode as FASTQ: a record after line 0 does not start with '@'",
        f"async-uploader: error: {tmp_path / 'missing'} cannot be read (No such file or directory)",
    ]
