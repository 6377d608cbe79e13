"""The pipeline recipes of README.md "In pipelines", taken from README.md itself and run as the tools would run
them: under ``bash -ue``, against the local store (named by AWS_ENDPOINT_URL, as a profile would name an endpoint).

Nextflow itself cannot be installed here: its script body is rendered the way Nextflow renders it (Groovy's
``\\$``/``\\\\`` escapes, ``${...}`` interpolation) and run in a work directory of symlinks, a retry in a new one.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from async_uploader.emulator import LocalStore, StoreOptions
from tests.conftest import REPO_ROOT, closed_port
from tests.helpers import gzip_like

STORE_ID = "1234567890"


def recipe(name: str) -> str:
    """The fenced block after ``<!-- recipe: NAME -->`` in README.md."""
    text = (REPO_ROOT / "README.md").read_text()
    match = re.search(rf"<!-- recipe: {name} -->\n```\w*\n(.*?)\n```\n", text, re.S)
    assert match, f"README.md has no recipe {name!r}"
    return match.group(1)


def groovy_string(body: str, values: dict[str, str]) -> str:
    """A Groovy GString as Nextflow renders it: ``\\x`` escapes, ``${name}`` interpolated from ``values``."""
    out: list[str] = []
    at = 0
    while at < len(body):
        char = body[at]
        if char == "\\" and at + 1 < len(body):
            out.append(body[at + 1])
            at += 2
        elif body.startswith("${", at):
            end = body.index("}", at)
            out.append(values[body[at + 2 : end]])
            at = end + 1
        else:
            assert char != "$" or body[at + 1 : at + 2] == "{", f"Groovy rejects a bare $ at {body[at : at + 20]!r}"
            out.append(char)
            at += 1
    return "".join(out)


def nextflow_script(values: dict[str, str]) -> str:
    block = recipe("nextflow")
    assert "errorStrategy { task.exitStatus == 75 ? 'retry' : 'terminate' }" in block
    body = block.split('script:\n    """\n', 1)[1].split('\n    """', 1)[0]
    return groovy_string(textwrap.dedent(body), values)


def snakemake_script(values: dict[str, str]) -> str:
    block = recipe("snakemake")
    literal = block.split("shell:\n", 1)[1].strip()
    command = textwrap.dedent(ast.literal_eval(literal))
    return re.sub(r"\{([^{}]+)\}", lambda m: values[m.group(1)], command)


@pytest.fixture
def shell_env(tmp_path: Path, cli_env: dict[str, str]) -> dict[str, str]:
    """cli_env with ``async-uploader`` on PATH (this checkout, this interpreter); each run's exit code is appended
    to the file ``$EXITS`` when that is set (else the shim execs, so signals reach the uploader itself)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "async-uploader"
    run = f'"{sys.executable}" -m async_uploader "$@"'
    shim.write_text(
        f'#!/bin/sh\n[ -n "${{EXITS:-}}" ] || exec {run}\n{run}\ncode=$?\necho $code >> "$EXITS"\nexit $code\n'
    )
    shim.chmod(0o755)
    return {**cli_env, "PATH": f"{bin_dir}{os.pathsep}{cli_env['PATH']}", "EXITS": str(tmp_path / "exits")}


async def run_bash(script: str, cwd: Path, env: dict[str, str], *, interrupt_when: Any = None) -> tuple[int, str, str]:
    """``bash -ue`` SCRIPT in ``cwd``; with ``interrupt_when`` (a callable), SIGINT to its process group once true."""
    path = cwd / ".command.sh"
    path.write_text(script + "\n")
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-ue",
        str(path),
        cwd=cwd,
        env=env,
        start_new_session=True,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    if interrupt_when is not None:
        deadline = time.monotonic() + 30
        while not interrupt_when() and time.monotonic() < deadline and process.returncode is None:
            await asyncio.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def work_dir(root: Path, name: str, reads: dict[str, Path]) -> Path:
    """A Nextflow-like work directory: the inputs staged as symlinks."""
    directory = root / "work" / name
    directory.mkdir(parents=True)
    for link, target in reads.items():
        (directory / link).symlink_to(target)
    return directory


def _nextflow_values(tmp_path: Path) -> dict[str, str]:
    return {
        "r1": "S1_R1.fq.gz",
        "r2": "S1_R2.fq.gz",
        "sample": "S1",
        "params.store_id": STORE_ID,
        "params.checkpoints": str(tmp_path / "checkpoints"),
    }


def _reads(tmp_path: Path, size: int) -> dict[str, Path]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return {f"S1_R{n}.fq.gz": gzip_like(data / f"S1_R{n}.fq.gz", size, seed=n) for n in (1, 2)}


async def test_nextflow_success_prints_only_the_read_set_id(tmp_path: Path, shell_env: dict[str, str]) -> None:
    (tmp_path / "checkpoints").mkdir()
    async with LocalStore(StoreOptions()) as store:
        env = {**shell_env, "AWS_ENDPOINT_URL": store.url}
        code, out, err = await run_bash(
            nextflow_script(_nextflow_values(tmp_path)), work_dir(tmp_path, "a1", _reads(tmp_path, 300_000)), env
        )
    assert code == 0, err
    assert re.fullmatch(r"\d{10,36}\n", out), out  # the process's `stdout` output: the id alone


async def test_nextflow_a_failure_is_never_exit_0_and_a_temporary_one_is_75(
    tmp_path: Path, shell_env: dict[str, str]
) -> None:
    (tmp_path / "checkpoints").mkdir()
    env = {**shell_env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"}
    reads = _reads(tmp_path, 100_000)
    code, out, err = await run_bash(nextflow_script(_nextflow_values(tmp_path)), work_dir(tmp_path, "a1", reads), env)
    assert (code, out) == (75, ""), err  # errorStrategy retries it
    broken = {**reads, "S1_R2.fq.gz": tmp_path / "missing.fq.gz"}
    code, _out, err = await run_bash(nextflow_script(_nextflow_values(tmp_path)), work_dir(tmp_path, "a2", broken), env)
    assert code == 2, err  # terminate: bad input is not retried


@pytest.mark.slow
async def test_nextflow_a_retry_in_a_new_work_directory_resumes_the_checkpoint(
    tmp_path: Path, shell_env: dict[str, str]
) -> None:
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    reads = _reads(tmp_path, 2 * 1024 * 1024)
    values = _nextflow_values(tmp_path)
    script = nextflow_script(values).replace("--no-progress", "--no-progress --part-size 128KiB --max-concurrency 2")
    async with LocalStore(StoreOptions(latency_ms=100)) as store:
        env = {**shell_env, "AWS_ENDPOINT_URL": store.url, "EXITS": ""}
        checkpoint = checkpoints / "S1.ckpt"
        started = lambda: checkpoint.exists() and checkpoint.stat().st_size > 1500  # noqa: E731 (a few parts in)
        first = await run_bash(script, work_dir(tmp_path, "a1", reads), env, interrupt_when=started)
        second = await run_bash(script, work_dir(tmp_path, "a2", reads), env)
    assert first[0] == 75, first[2]  # the task was stopped: errorStrategy retries it
    assert second[0] == 0 and re.fullmatch(r"\d{10,36}\n", second[1]), second[2]
    assert "parts kept from before" in second[2], second[2]


async def test_snakemake_rule_writes_the_id_or_nothing(tmp_path: Path, shell_env: dict[str, str]) -> None:
    reads = _reads(tmp_path, 200_000)
    values = {
        "input.r1": str(reads["S1_R1.fq.gz"]),
        "input.r2": str(reads["S1_R2.fq.gz"]),
        "config[store_id]": STORE_ID,
        "wildcards.sample": "S1",
        "output": "uploaded/S1.readset",
    }
    for directory in ("uploaded", "checkpoints", ".async-uploader"):
        (tmp_path / directory).mkdir()
    script = "set -o pipefail\n" + snakemake_script(values)  # Snakemake's bash strict mode: -euo pipefail
    async with LocalStore(StoreOptions()) as store:
        code, _out, err = await run_bash(script, tmp_path, {**shell_env, "AWS_ENDPOINT_URL": store.url})
    assert code == 0, err
    assert re.fullmatch(r"\d{10,36}\n", (tmp_path / "uploaded/S1.readset").read_text())
    (tmp_path / "uploaded/S1.readset").unlink()
    dead = {**shell_env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"}
    code, _out, err = await run_bash(script, tmp_path, dead)
    assert code == 75 and not (tmp_path / "uploaded/S1.readset").exists(), err


@pytest.mark.slow
async def test_the_shell_loop_retries_a_temporary_failure_and_stops_on_a_permanent_one(
    tmp_path: Path, shell_env: dict[str, str]
) -> None:
    reads = _reads(tmp_path, 200_000)
    (tmp_path / "checkpoints").mkdir()
    port = closed_port()
    env = {
        **shell_env,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "R1": str(reads["S1_R1.fq.gz"]),
        "R2": str(reads["S1_R2.fq.gz"]),
        "STORE_ID": STORE_ID,
        "SAMPLE": "S1",
        "RETRY_SECONDS": "2",
    }
    exits = Path(env["EXITS"])
    run = asyncio.ensure_future(run_bash(recipe("shell"), tmp_path, env))
    deadline = time.monotonic() + 30
    while not exits.exists() and time.monotonic() < deadline:  # the first attempt finds no store
        await asyncio.sleep(0.05)
    async with LocalStore(StoreOptions(port=port)):  # there before the loop's 2 s wait is over
        code, _out, err = await run
    assert exits.read_text().split() == ["75", "0"], err
    assert code == 0, err
    assert err.count("temporary failure, trying again") == 1, err
    assert re.fullmatch(r"\d{10,36}\n", (tmp_path / "S1.readset").read_text())
    code, _out, err = await run_bash(recipe("shell"), tmp_path, {**env, "R2": str(tmp_path / "missing.fq.gz")})
    assert code == 2 and "trying again" not in err, err
