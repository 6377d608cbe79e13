"""The command line's parsing, settings, messages and exit codes, in process (no store, no subprocess)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from async_uploader import cli
from async_uploader.cli.common import Signals
from async_uploader.core.config import FileType, RateLimits
from async_uploader.core.errors import (
    AccessDeniedError,
    CertificateError,
    CheckpointMismatchError,
    ClockSkewError,
    ConfigError,
    InternalServerError,
    ProxyRefusedError,
    RetryExhaustedError,
    SourceError,
    ThrottlingError,
    TransportError,
    UploadInterruptedError,
    ValidationError,
)

BASE = ["upload", "r1.fq.gz", "--store-id", "1234567890", "--file-type", "fastq", "--subject-id", "s"]
BASE += ["--sample-id", "x", "--name", "n"]


def parse(*extra: str) -> object:
    return cli.build_parser().parse_args([*BASE, *extra])


def test_upload_arguments_parse_into_settings() -> None:
    args = parse("--part-size", "8MiB", "--max-concurrency", "4", "--tag", "a=1", "--tag", "b=x=y")
    assert args.file_type is FileType.FASTQ  # type: ignore[attr-defined]
    assert args.part_size == 8 * 1024 * 1024  # type: ignore[attr-defined]
    assert args.tag == [("a", "1"), ("b", "x=y")]  # type: ignore[attr-defined]
    config = cli.upload_config(args)  # type: ignore[arg-type]
    assert config.max_concurrency == 4 and config.rates == RateLimits()


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:8080", True),
        ("http://localhost:1", True),
        ("http://[::1]:9", True),
        ("http://127.9.9.9", True),
        ("https://storage-omics.us-east-1.amazonaws.com", False),
        ("http://10.0.0.1:80", False),
        (None, False),
    ],
)
def test_loopback_detection(url: str | None, local: bool) -> None:
    assert cli.is_loopback(url) is local


def test_rate_limits_default_to_quotas_and_to_unlimited_on_loopback() -> None:
    assert cli.rate_limits(parse()) == RateLimits()  # type: ignore[arg-type]
    assert cli.rate_limits(parse("--endpoint-url", "http://127.0.0.1:5")) == RateLimits.unlimited()  # type: ignore[arg-type]
    local_capped = cli.rate_limits(parse("--endpoint-url", "http://127.0.0.1:5", "--max-rate", "3"))  # type: ignore[arg-type]
    assert local_capped.parts == 3 and local_capped.control is None
    remote = cli.rate_limits(parse("--max-rate", "none"))  # type: ignore[arg-type]
    assert remote.parts is None and remote.control == 1.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--part-size", "101MiB"], "over 100 MiB"),
        (["--part-size", "0"], "at least 1 byte"),
        (["--part-size", "lots"], "not a number of bytes"),
        (["--max-rate", "-1"], "positive"),
        (["--max-concurrency", "0"], "at least 1"),
        (["--tag", "novalue"], "KEY=VALUE"),
        (["--keep-on-failure", "--abort-on-failure"], "not allowed with"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        parse(*extra)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("async-uploader: error: ") and message in err


def test_main_reports_source_problems_before_any_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*BASE, "--endpoint-url", "http://127.0.0.1:1"]
    argv[1] = str(tmp_path / "missing.fq.gz")
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == f"async-uploader: error: SOURCE1 {tmp_path / 'missing.fq.gz'}: no such file\n"
    both = [*argv, "--file-type", "BAM"]
    both.insert(2, str(tmp_path / "r2"))
    assert cli.main(both) == 2
    assert "only allowed for paired FASTQ" in capsys.readouterr().err


def test_exit_codes_follow_the_error_tree() -> None:
    assert cli.exit_code_for(SourceError("x")) == 2
    assert cli.exit_code_for(CheckpointMismatchError("x")) == 2
    assert cli.exit_code_for(AccessDeniedError("denied", status=403)) == 2
    assert cli.exit_code_for(UploadInterruptedError("x")) == 75
    # sysexits: what may work later is 75 (EX_TEMPFAIL), whatever raised it; a permanent failure is 1
    assert cli.exit_code_for(InternalServerError("boom", status=500)) == 75
    assert cli.exit_code_for(ThrottlingError("slow down", status=429)) == 75
    assert cli.exit_code_for(TransportError("reset")) == 75
    assert cli.exit_code_for(RetryExhaustedError("failed 10 times")) == 75
    assert cli.exit_code_for(CertificateError("untrusted")) == 1
    assert cli.exit_code_for(ProxyRefusedError("407")) == 1
    assert cli.exit_code_for(ValidationError("bad", status=400)) == 1
    assert cli.exit_code_for(ClockSkewError("clock", offset=1200.0, retryable=False)) == 2
    assert cli.exit_code_for(ValueError("bug")) == 1


def test_error_lines_name_what_to_fix() -> None:
    denied = cli.describe_error(
        AccessDeniedError("bad signature", status=403, operation="CreateMultipartReadSetUpload")
    )
    assert "credentials" in denied and "\n" not in denied
    exhausted = RetryExhaustedError("UploadReadSetPart failed 10 times")
    exhausted.__cause__ = InternalServerError("boom", status=500)
    assert "InternalServerException" in cli.describe_error(exhausted)
    assert "--debug" in cli.describe_error(KeyError("x"))
    assert cli.describe_error(ConfigError("multi\nline")) == "multi line"


def test_resume_command_repeats_the_arguments_without_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/x/async_uploader/__main__.py"])
    command = cli.resume_command(["upload", "my file.fq.gz", "--restart", "--name", "n"])
    assert command == f"{sys.executable} -m async_uploader upload 'my file.fq.gz' --name n"
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/async-uploader"])
    assert cli.resume_command(["upload", "a"]) == "/usr/local/bin/async-uploader upload a"


def test_interrupted_exit_code_is_75_with_or_without_a_checkpoint() -> None:
    assert cli.exit_code_for(UploadInterruptedError("x", checkpoint="/c")) == 75
    assert cli.exit_code_for(UploadInterruptedError("stopped; it was aborted")) == 75


async def test_signals_count_so_a_second_one_stops_harder() -> None:

    seen: list[tuple[int, int]] = []
    with Signals(lambda signum, count: seen.append((signum, count))):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.01)
    assert seen == [(signal.SIGINT, 1), (signal.SIGTERM, 2)]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers removed afterwards
