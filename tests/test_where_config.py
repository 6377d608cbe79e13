"""The AWS configuration users already have, in config files in a temp dir and the environment: the four endpoint
settings (and their order), the region's order, AWS_MAX_ATTEMPTS / AWS_RETRY_MODE / max_attempts and --max-attempts
against a store that fails every request, and one-line errors for a bad profile or setting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from async_uploader.core.config import RetryConfig
from async_uploader.core.errors import ConfigError
from async_uploader.core.retry import aws_retry
from async_uploader.emulator import LocalStore, StoreOptions
from async_uploader.emulator.faults import FaultOptions
from tests.conftest import closed_port, run_cli_process
from tests.helpers import gzip_like, upload_argv


def _argv(tmp_path: Path, *extra: str, endpoint: str | None = None) -> list[str]:
    source = gzip_like(tmp_path / "r1.fq.gz", 100_000)
    argv = upload_argv(endpoint or "X", source, extra=("--part-size", "64KiB", "--no-checkpoint", *extra))
    if endpoint is None:
        at = argv.index("--endpoint-url")
        del argv[at : at + 2]
    return argv


async def _run(tmp_path: Path, cli_env: dict[str, str], *extra: str, config: str = "", **env: str) -> Any:
    path = tmp_path / "config"
    path.write_text(config)
    return await run_cli_process(_argv(tmp_path, *extra), env={**cli_env, "AWS_CONFIG_FILE": str(path), **env})


def _dead() -> str:
    return f"http://127.0.0.1:{closed_port()}"


@pytest.mark.parametrize("where", ["AWS_ENDPOINT_URL_OMICS", "AWS_ENDPOINT_URL", "services section", "endpoint_url"])
async def test_the_endpoint_comes_from_each_of_botocores_four_settings_in_its_order(
    where: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Each setting is used when set, and wins over every setting after it (those point at nothing)."""
    async with LocalStore(StoreOptions()) as store:
        order = ["AWS_ENDPOINT_URL_OMICS", "AWS_ENDPOINT_URL", "services section", "endpoint_url"]
        urls = {name: (store.url if name == where else _dead()) for name in order[order.index(where) :]}
        env = {name: url for name, url in urls.items() if name.startswith("AWS_")}
        lines = ["[profile lab]", "region = eu-west-1"]
        if "endpoint_url" in urls:
            lines.append(f"endpoint_url = {urls['endpoint_url']}")
        if "services section" in urls:
            lines += [
                "services = local",
                "",
                "[services local]",
                "omics =",
                f"  endpoint_url = {urls['services section']}",
            ]
        run = await _run(tmp_path, cli_env, config="\n".join(lines) + "\n", AWS_PROFILE="lab", **env)
        assert run.returncode == 0, run.stderr
        # a configured endpoint is a custom endpoint: no storage-/control-storage- host prefix was put before it
        # not the reachability preflight, nor the verifier's GetSequenceStore (a control-plane call)
        before = ("Unknown", "GetSequenceStore", "ListReadSets")  # the probe, the ETag family, the look for the files
        operations = [e["operation"] for e in store.requests if e["operation"] not in before]
        assert operations[:2] == ["CreateMultipartReadSetUpload", "UploadReadSetPart"]


async def test_ignore_configured_endpoint_urls_is_respected(tmp_path: Path, cli_env: dict[str, str]) -> None:
    run = await _run(
        tmp_path,
        cli_env,
        "--dry-run",
        "--region",
        "eu-west-1",
        AWS_ENDPOINT_URL=_dead(),
        AWS_IGNORE_CONFIGURED_ENDPOINT_URLS="true",
    )
    assert run.returncode == 0, run.stderr
    assert "https://storage-omics.eu-west-1.amazonaws.com" in run.stdout


@pytest.mark.parametrize(
    ("flags", "env", "region"),
    [
        (("--region", "ap-south-1"), {"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "us-east-2"}, "ap-south-1"),
        ((), {"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "us-east-2"}, "us-west-2"),
        ((), {"AWS_DEFAULT_REGION": "us-east-2"}, "us-east-2"),
        ((), {}, "eu-central-1"),
    ],
)
async def test_the_region_order(
    flags: tuple[str, ...], env: dict[str, str], region: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    run = await _run(tmp_path, cli_env, "--dry-run", *flags, config="[default]\nregion = eu-central-1\n", **env)
    assert run.returncode == 0, run.stderr
    assert f"https://storage-omics.{region}.amazonaws.com" in run.stdout


@pytest.mark.parametrize(
    ("flags", "env", "config", "attempts"),
    [
        ((), {"AWS_MAX_ATTEMPTS": "2"}, "", 2),
        ((), {}, "[default]\nmax_attempts = 3\n", 3),
        (("--max-attempts", "1"), {"AWS_MAX_ATTEMPTS": "4"}, "", 1),
        ((), {"AWS_MAX_ATTEMPTS": "2", "AWS_RETRY_MODE": "standard"}, "[default]\nmax_attempts = 5\n", 2),
    ],
)
async def test_max_attempts_from_the_environment_the_profile_and_the_flag(
    flags: tuple[str, ...], env: dict[str, str], config: str, attempts: int, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    failing = FaultOptions(error_rate=1.0, operations=frozenset({"CreateMultipartReadSetUpload"}))
    async with LocalStore(StoreOptions(faults=failing)) as store:
        path = tmp_path / "config"
        path.write_text(config)
        argv = [*_argv(tmp_path, *flags, endpoint=store.url)]
        run = await run_cli_process(argv, env={**cli_env, "AWS_CONFIG_FILE": str(path), **env})
        creates = [e for e in store.requests if e["operation"] == "CreateMultipartReadSetUpload"]
    assert len(creates) == attempts, run.stderr
    assert run.returncode == 75, run.stderr  # a 5xx that outlasted the retries is transient
    [line] = run.stderr_lines
    assert f"failed {attempts} times" in line, line


def test_retry_settings_map_onto_the_engine() -> None:
    assert aws_retry(None, None) == aws_retry(None, "adaptive")
    assert aws_retry(None, None).retry == RetryConfig() and aws_retry(None, None).adaptive
    standard = aws_retry(3, "standard")
    assert standard.retry.max_attempts == 3 and not standard.adaptive
    assert standard.retry.max_delay == RetryConfig().max_delay
    assert not aws_retry(None, "legacy").adaptive
    with pytest.raises(ConfigError, match="retry mode 'fast'"):
        aws_retry(None, "fast")
    with pytest.raises(ConfigError):
        aws_retry(0, None)


@pytest.mark.parametrize(
    ("env", "config", "expected"),
    [
        ({"AWS_PROFILE": "nosuch"}, "", "AWS profile 'nosuch' was not found"),
        ({"AWS_RETRY_MODE": "fast"}, "", "retry mode 'fast' is not one of legacy, standard, adaptive"),
        ({}, "[default]\nmax_attempts = many\n", "max_attempts is invalid"),
        ({"AWS_ENDPOINT_URL": "ftp://x"}, "", "(from AWS_ENDPOINT_URL)"),
        ({"AWS_PROFILE": "lab"}, "[profile lab]\nservices = gone\n", "services"),
    ],
)
async def test_bad_settings_are_one_line(
    env: dict[str, str], config: str, expected: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    run = await _run(tmp_path, cli_env, "--region", "us-east-1", config=config, **env)
    assert run.returncode == 2, run.stderr
    [line] = run.stderr_lines
    assert expected in line and "Traceback" not in run.stderr, line
    assert "None" not in line


async def test_dry_run_json_names_the_configured_endpoint(tmp_path: Path, cli_env: dict[str, str]) -> None:
    run = await _run(tmp_path, cli_env, "--dry-run", "--json", AWS_ENDPOINT_URL_OMICS="http://127.0.0.1:9")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["endpoint"].startswith("http://127.0.0.1:9 (a custom endpoint")
