"""The command line in a pipeline and a shell: progress lines for logs, --log-file, unknown options, closed pipes,
tables, --version, help, completion, the man page, `serve`'s start lines and known stores, and --dry-run's checks.

Each user-visible behaviour runs a real ``python -m async_uploader`` process against a store on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from async_uploader.cli import build_parser
from async_uploader.cli.progress import ProgressBar, human_size
from async_uploader.cli.shell import man_page
from async_uploader.core.config import Source
from async_uploader.core.stats import UploadStatistics
from async_uploader.emulator import LocalStore
from tests.conftest import REPO_ROOT, CliRun
from tests.store_helpers import create, omics, put
from tests.test_cli import STORE, _interrupt, aws_test_keys, fastq, upload_args

RunCli = Callable[..., Awaitable[CliRun]]
__all__ = ["aws_test_keys"]  # a fixture, used by name

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


# -- progress for logs, --log-file ----------------------------------------------------------------------------


async def test_progress_lines_at_the_interval_and_a_log_file_without_secrets(
    make_store: Callable[..., Awaitable[LocalStore]], run_cli: RunCli, tmp_path: Path
) -> None:
    access, secret = "AKIDLOGFILETEST", "s3cret-never-in-a-log"
    store = await make_store(latency_ms=40, access_key=access, secret_key=secret)
    source = fastq(tmp_path / "reads.fastq.gz", 1_500_000)  # ~23 parts of 64 KiB, one at a time: >= 0.9 s
    log_file = tmp_path / "upload.log"
    run = await run_cli(
        *upload_args(store, str(source)),
        "--part-size",
        "64KiB",
        "--max-concurrency",
        "1",
        "--fixed-concurrency",
        "--progress-interval",
        "0.2s",
        "--log-file",
        str(log_file),
        env={"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret},
    )
    assert run.returncode == 0, run.stderr
    progress = [line for line in run.stderr_lines if " uploading: " in line and "%" in line]
    assert len(progress) >= 2, run.stderr
    for line in progress:
        assert STAMP.match(line) and "MB/s" in line and "ETA" in line and "retries 0" in line, line
        assert "\x1b[" not in line
    assert any(" phase " in line for line in run.stderr_lines), run.stderr  # a phase change after the first line
    assert run.stderr_lines[-2].startswith("async-uploader: uploaded")  # the summary, then the verification

    text = log_file.read_text()
    lines = text.splitlines()
    assert all(STAMP.match(line) for line in lines), text[:500]
    assert sum("PUT UploadReadSetPart 200" in line for line in lines) >= 23, text[:2000]
    assert any("CreateMultipartReadSetUpload" in line for line in lines) and any("phase done" in line for line in lines)
    assert secret not in text and access not in text


async def test_quiet_or_zero_interval_prints_no_progress_lines(
    make_store: Callable[..., Awaitable[LocalStore]], run_cli: RunCli, tmp_path: Path, aws_test_keys: None
) -> None:
    store = await make_store(latency_ms=20)
    source = fastq(tmp_path / "reads.fastq.gz", 600_000)
    argv = [*upload_args(store, str(source)), "--part-size", "64KiB", "--max-concurrency", "1", "--fixed-concurrency"]
    quiet, off = await asyncio.gather(
        run_cli(*argv, "-q", "--progress-interval", "0.1"),
        run_cli(*argv, "--name", "other", "--progress-interval", "0"),
    )
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert off.returncode == 0 and not any("%" in line for line in off.stderr_lines), off.stderr


def test_the_bar_is_one_line_on_a_narrow_terminal() -> None:
    out = StringIO()
    console = Console(file=out, force_terminal=True, width=60, color_system=None)
    stats = UploadStatistics(
        state="uploading",
        bytes_done={Source.SOURCE1: 3_000_000, Source.SOURCE2: 3_000_000},
        bytes_sent={Source.SOURCE1: 4_000_000, Source.SOURCE2: 4_000_000},
        bytes_total={Source.SOURCE1: 10_000_000, Source.SOURCE2: 10_000_000},
        parts_done={Source.SOURCE1: 3, Source.SOURCE2: 3},
        parts_total={Source.SOURCE1: 10, Source.SOURCE2: 10},
        parts_in_flight={Source.SOURCE1: 1, Source.SOURCE2: 1},
        retries=0,
        throttles=0,
        rate_limit=None,
        elapsed=2.0,
        resumed_parts=0,
    )
    with ProgressBar(console) as bar:
        bar.update(stats, now=1.0)
        bar.update(stats, now=2.0)
    last = [line for line in re.split(r"[\r\n]|\x1b\[[0-9;?]*[A-Za-z]", out.getvalue()) if line.strip()][-1]
    assert len(last) <= 60 and "40%" in last and "MB/s" in last and "ETA" in last, repr(out.getvalue())
    assert "SOURCE" not in last and "parts" not in last


def test_human_sizes() -> None:
    assert [human_size(n) for n in (0, 999, 1500, 104_857_600, 2_500_000_000)] == [
        "0 B",
        "999 B",
        "1.50 kB",
        "105 MB",
        "2.50 GB",
    ]


# -- options, help, version, completion, man ---------------------------------------------------------------------


async def test_unknown_options_are_named_and_prefixes_are_not_options(run_cli: RunCli, tmp_path: Path) -> None:
    source = fastq(tmp_path / "r.fastq.gz")
    typo, prefix, serve_prefix, log_file = await asyncio.gather(
        run_cli("upload", str(source), "--store-di", STORE, "--file-type", "FASTQ"),
        run_cli("upload", str(source), "--store-id", STORE, "--end", "http://127.0.0.1:9", "--file-typ", "FASTQ"),
        run_cli("serve", "--stor", STORE),
        run_cli("uploads", "--store-id", STORE, "--log-file", str(tmp_path / "no-such-dir" / "x.log")),
    )
    assert log_file.returncode == 2 and len(log_file.stderr_lines) == 1 and "--log-file" in log_file.stderr
    assert typo.returncode == 2 and len(typo.stderr_lines) == 1, typo.stderr
    assert "unknown option --store-di; did you mean --store-id?" in typo.stderr
    assert prefix.returncode == 2 and "unknown option --end; did you mean --endpoint-url?" in prefix.stderr
    assert serve_prefix.returncode == 2 and "unknown option --stor" in serve_prefix.stderr


async def test_version_names_what_matters_and_every_command_has_a_description_and_an_example(
    run_cli: RunCli,
) -> None:
    version = await run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("async-uploader ")
    for name in ("Python", "OpenSSL", "botocore", "aiohttp"):
        assert name in version.stdout, version.stdout
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    helps = await asyncio.gather(*(run_cli(name, "--help") for name in commands))
    for name, helped in zip(commands, helps, strict=True):
        assert helped.returncode == 0, name
        assert commands[name].description, name
        assert "example" in helped.stdout and f"async-uploader {name}" in helped.stdout, (name, helped.stdout)


def test_the_man_page_is_made_from_the_parser() -> None:
    page = man_page(build_parser())
    assert page.startswith(".TH ASYNC-UPLOADER 1 ")
    for name in ("upload", "batch", "serve", "uploads", "parts", "abort", "completion"):
        assert f".SS async\\-uploader {name}" in page
    assert "\\fB\\-\\-store\\-id\\fR" in page and "EXIT STATUS" in page
    if shutil.which("groff"):
        rendered = subprocess.run(
            ["groff", "-man", "-Tutf8", "-ww"], input=page, capture_output=True, text=True, timeout=60, check=True
        )
        assert "async-uploader upload" in rendered.stdout and rendered.stderr == "", rendered.stderr


async def test_fish_completion_names_the_commands_and_options(run_cli: RunCli) -> None:
    fish = await run_cli("completion", "fish")
    assert fish.returncode == 0, fish.stderr
    assert "-a upload" in fish.stdout and "-l store-id" in fish.stdout and "-l endpoint-url" in fish.stdout


def _bash_complete(script: Path, words: list[str]) -> list[str]:
    """What bash's programmable completion offers for the last of ``words``, the completion script sourced."""
    function = re.search(r"complete\b[^\n]*-F\s+(\S+)[^\n]*async-uploader", script.read_text())
    assert function, "no complete -F line in the bash script"
    quoted = " ".join(f"'{word}'" for word in words)
    program = (
        f"source {script}\n"
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; COMP_LINE='{' '.join(words)}'; "
        f"COMP_POINT=${{#COMP_LINE}}\n"
        f"{function.group(1)} async-uploader '{words[-1]}' '{words[-2]}'\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


async def test_bash_completion_driven_by_bash(run_cli: RunCli, tmp_path: Path) -> None:
    pytest.importorskip("shtab", reason="the bash and zsh scripts are made by shtab (a dependency; make installs it)")
    if shutil.which("bash") is None:
        pytest.skip("no bash here")
    script = await run_cli("completion", "bash")
    assert script.returncode == 0, script.stderr
    path = tmp_path / "async-uploader.bash"
    path.write_text(script.stdout)
    assert "upload" in _bash_complete(path, ["async-uploader", "up"])
    assert "--store-id" in _bash_complete(path, ["async-uploader", "upload", "--store-"])
    zsh = await run_cli("completion", "zsh")
    assert zsh.returncode == 0 and "#compdef async-uploader" in zsh.stdout


# -- closed pipes, tables ----------------------------------------------------------------------------------------


@pytest.fixture
async def upload_with_parts(local_store: LocalStore) -> str:
    """An upload in progress in ``local_store`` with 40 parts of SOURCE1 (made through boto3, off the loop)."""

    def make() -> str:
        client = omics(local_store)
        upload_id = create(client)
        for number in range(1, 41):
            put(client, upload_id, "SOURCE1", number, b"@r\nACGT\n+\nIIII\n" * 400)
        return upload_id

    return await asyncio.to_thread(make)


def _cli_command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "async_uploader", *argv]


async def test_a_closed_pipe_ends_quietly(
    local_store: LocalStore, upload_with_parts: str, cli_env: dict[str, str]
) -> None:
    where = ["--store-id", STORE, "--upload-id", upload_with_parts, "--endpoint-url", local_store.url]
    argv = _cli_command("parts", *where)
    # The reader is gone before the first line is written: every write fails, deterministically.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=write_end, stderr=asyncio.subprocess.PIPE, env=cli_env, cwd=REPO_ROOT
        )
    finally:
        os.close(write_end)
    async with asyncio.timeout(60):
        _, err = await process.communicate()
    assert process.returncode == 141 and err.decode() == "", err.decode()
    # As a shell user writes it.
    shell = " ".join(f"'{arg}'" for arg in argv) + " | head -1"
    process = await asyncio.create_subprocess_exec(
        "sh", "-c", shell, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=cli_env, cwd=REPO_ROOT
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert out.decode().startswith("SOURCE1\t1\t") and err.decode() == "", err.decode()


async def test_parts_and_uploads_as_tables_on_a_terminal_and_json_everywhere(
    local_store: LocalStore, upload_with_parts: str, run_cli: RunCli
) -> None:
    pexpect = pytest.importorskip("pexpect")
    where = ["--store-id", STORE, "--endpoint-url", local_store.url]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_CONFIG_FILE": os.devnull}
    env["PYTHONPATH"] = str(REPO_ROOT)

    def on_a_terminal(*argv: str) -> str:
        child = pexpect.spawn(
            sys.executable, ["-m", "async_uploader", *argv], env=env, dimensions=(40, 160), encoding="utf-8", timeout=60
        )
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0, child.before
        return str(child.before)

    parts = await asyncio.to_thread(on_a_terminal, "parts", "--upload-id", upload_with_parts, *where)
    lines = parts.splitlines()
    assert lines[0].split() == ["SOURCE", "PART", "SIZE", "CHECKSUM"], parts
    assert "6.00 kB" in lines[1] and "40 part(s), 240 kB" in parts
    uploads = await asyncio.to_thread(on_a_terminal, "uploads", *where)
    assert uploads.splitlines()[0].split()[:3] == ["UPLOAD", "ID", "CREATED"] and upload_with_parts in uploads

    listed = await run_cli("parts", "--upload-id", upload_with_parts, "--json", *where)
    assert [json.loads(line)["partNumber"] for line in listed.stdout.splitlines()] == list(range(1, 41))
    aborted = await run_cli("abort", "--upload-id", upload_with_parts, "--json", *where)
    assert aborted.returncode == 0 and aborted.stderr == "", aborted.stderr
    assert json.loads(aborted.stdout) == {"uploadId": upload_with_parts, "aborted": True, "checkpointRemoved": None}


# -- serve: its start lines, its stores ------------------------------------------------------------------------


@pytest.fixture
async def served(cli_env: dict[str, str]) -> AsyncIterator[list[str]]:
    """``async-uploader serve`` as a subprocess: the lines it prints at start."""
    process = await asyncio.create_subprocess_exec(
        *_cli_command("serve"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env,
        cwd=REPO_ROOT,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(30):
            lines = [(await process.stdout.readline()).decode().rstrip("\n") for _ in range(4)]
        yield lines
    finally:
        process.terminate()
        async with asyncio.timeout(30):
            await process.wait()


async def test_serve_prints_keys_stores_and_a_command_and_refuses_other_stores(
    served: list[str], run_cli: RunCli, tmp_path: Path
) -> None:
    url, keys, stores, command = served
    assert url.startswith("http://127.0.0.1:")
    assert "access key id test" in keys and "secret access key test" in keys
    assert stores == "store ids: 1234567890"
    assert command.startswith("upload with: AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test async-uploader upload ")
    assert f"--endpoint-url {url}" in command and "--store-id 1234567890" in command
    source = fastq(tmp_path / "reads.fastq.gz")
    argv = upload_args(LocalStoreUrl(url), str(source))  # type: ignore[arg-type]
    wrong = await run_cli(*[("2222222222" if arg == STORE else arg) for arg in argv])
    assert wrong.returncode == 1 and len(wrong.stderr_lines) == 1, wrong.stderr
    assert "2222222222" in wrong.stderr and "check --store-id" in wrong.stderr
    right = await run_cli(*argv)
    assert right.returncode == 0, right.stderr


class LocalStoreUrl:
    """Stands in for a LocalStore where only its ``url`` is read."""

    def __init__(self, url: str) -> None:
        self.url = url


async def test_serve_json_start_line(run_cli: RunCli, cli_env: dict[str, str]) -> None:
    process = await asyncio.create_subprocess_exec(
        *_cli_command("serve", "--json", "--store-id", "1111111111", "--store-id", "2222222222"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=cli_env,
        cwd=REPO_ROOT,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(30):
            start = json.loads(await process.stdout.readline())
    finally:
        process.terminate()
        async with asyncio.timeout(30):
            await process.wait()
    assert start["storeIds"] == ["1111111111", "2222222222"] and start["accessKeyId"] == "test"
    assert start["url"].startswith("http://") and "--store-id 1111111111" in start["uploadCommand"]


# -- --dry-run: every check that needs no request --------------------------------------------------------------


async def test_dry_run_refuses_a_bam_declared_fastq_and_identical_sources(
    local_store: LocalStore, run_cli: RunCli, tmp_path: Path
) -> None:
    bam = tmp_path / "reads.bam"
    bam.write_bytes(gzip.compress(b"BAM\x01" + bytes(200)))
    mate = fastq(tmp_path / "r1.fastq.gz")
    copy = tmp_path / "copy.fastq.gz"
    copy.write_bytes(mate.read_bytes())
    as_fastq, same, copied = await asyncio.gather(
        run_cli(*upload_args(local_store, str(bam)), "--dry-run"),
        run_cli(*upload_args(local_store, str(mate), str(mate)), "--dry-run"),
        run_cli(*upload_args(local_store, str(mate), str(copy)), "--dry-run"),
    )
    assert as_fastq.returncode == 2 and len(as_fastq.stderr_lines) == 1, as_fastq.stderr
    assert "declared FASTQ but it is a BAM file" in as_fastq.stderr and "--file-type" in as_fastq.stderr
    assert same.returncode == 2 and "same file as SOURCE1" in same.stderr, same.stderr
    assert copied.returncode == 2 and "same bytes as SOURCE1" in copied.stderr, copied.stderr
    assert local_store.requests == []  # nothing was sent


@pytest.mark.slow
async def test_dry_run_says_a_checkpoint_means_a_resume_and_what_is_left(
    make_store: Callable[..., Awaitable[LocalStore]],
    run_cli: RunCli,
    cli_env: dict[str, str],
    tmp_path: Path,
    aws_test_keys: None,
) -> None:
    store = await make_store(latency_ms=60)
    source = tmp_path / "reads.fastq.gz"
    source.write_bytes(fastq(tmp_path / "block.fastq.gz").read_bytes() * 4)
    argv = [*upload_args(store, str(source)), "--part-size", "128KiB", "--max-concurrency", "2"]
    code, _, err = await _interrupt(argv, cli_env)
    assert code == 75, err
    sent = len(store.requests)
    planned = await run_cli(*argv, "--dry-run", "--json")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    resume = plan["resume"]
    total = plan["sources"]["SOURCE1"]["parts"]
    assert resume["uploadId"] and resume["partsKept"] >= 1 and resume["partsKept"] + resume["partsLeft"] == total
    assert 0 < resume["bytesLeft"] < source.stat().st_size
    text = await run_cli(*argv, "--dry-run")
    assert f"{resume['partsLeft']:,} parts" in text.stdout and "left to send" in text.stdout, text.stdout
    fresh = await run_cli(*argv, "--dry-run", "--restart", "--json")
    assert json.loads(fresh.stdout)["resume"] is None
    assert len(store.requests) == sent  # the dry runs sent nothing
