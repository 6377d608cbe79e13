"""TLS as the AWS CLI has it, over real TLS (a trustme CA, a TLS front before the local store): verified by
default, AWS_CA_BUNDLE, a profile's ca_bundle, --ca-bundle, --no-verify-ssl with a warning; an untrusted
certificate fails in seconds, is not retried, and says what to set."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trustme

from async_uploader import RetryConfig, ServiceConfig, Uploader
from async_uploader.core.errors import CertificateError
from async_uploader.emulator import LocalStore
from tests.conftest import run_cli_process
from tests.helpers import TlsFront, fast_config, gzip_like, paired, upload_argv


async def _upload(url: str, tmp_path: Path, cli_env: dict[str, str], *extra: str, **env: str) -> Any:
    source = gzip_like(tmp_path / "r1.fq.gz", 200_000)
    argv = upload_argv(url, source, extra=("--part-size", "64KiB", "--no-checkpoint", *extra))
    return await run_cli_process(argv, env={**cli_env, **env}, limit=60)


async def test_an_untrusted_certificate_fails_in_seconds_saying_what_to_set(
    tls_store: tuple[TlsFront, Path, LocalStore], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    tls, _ca, store = tls_store
    run = await _upload(tls.url, tmp_path, cli_env)
    assert run.returncode == 1, run.stderr  # permanent: retrying cannot make the certificate trusted
    [line] = run.stderr_lines
    assert "certificate" in line and "AWS_CA_BUNDLE" in line and "--ca-bundle" in line, line
    assert run.seconds < 10 and store.requests == []


async def test_a_certificate_failure_is_not_retried_by_the_engine(
    tls_store: tuple[TlsFront, Path, LocalStore], tmp_path: Path, test_credentials: None
) -> None:
    tls, _ca, _store = tls_store
    config = fast_config(64 * 1024, retry=RetryConfig(max_attempts=10, base_delay=0.5, max_delay=1.0))
    started = time.monotonic()
    async with Uploader(config, service=ServiceConfig(endpoint_url=tls.url)) as uploader:
        with pytest.raises(CertificateError, match="AWS_CA_BUNDLE"):
            await uploader.upload(paired(tmp_path, 100_000), store_id="1234567890", checkpoint=False)
    # raised as itself, not as RetryExhaustedError after ten tries with backoff
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("where", ["AWS_CA_BUNDLE", "profile ca_bundle", "--ca-bundle"])
async def test_the_ca_bundle_is_taken_from_where_the_aws_cli_takes_it(
    where: str, tls_store: tuple[TlsFront, Path, LocalStore], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    tls, ca_file, store = tls_store
    config = tmp_path / "config"
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    if where == "AWS_CA_BUNDLE":
        run = await _upload(tls.url, tmp_path, cli_env, AWS_CA_BUNDLE=str(ca_file))
    elif where == "profile ca_bundle":
        config.write_text(f"[profile lab]\nca_bundle = {ca_file}\n")
        run = await _upload(tls.url, tmp_path, cli_env, AWS_CONFIG_FILE=str(config), AWS_PROFILE="lab")
    else:  # the flag wins over the variable
        run = await _upload(tls.url, tmp_path, cli_env, "--ca-bundle", str(ca_file), AWS_CA_BUNDLE=str(other))
    assert run.returncode == 0, run.stderr
    assert any(entry["operation"] == "CompleteMultipartReadSetUpload" for entry in store.requests)


async def test_no_verify_ssl_works_and_warns(
    tls_store: tuple[TlsFront, Path, LocalStore], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    tls, _ca, _store = tls_store
    run = await _upload(tls.url, tmp_path, cli_env, "--no-verify-ssl", "--quiet")
    assert run.returncode == 0, run.stderr
    [warning] = run.stderr_lines  # shown even with --quiet
    assert "not verified" in warning and "--ca-bundle" in warning


async def test_a_missing_ca_bundle_is_one_line(
    tls_store: tuple[TlsFront, Path, LocalStore], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    tls, _ca, _store = tls_store
    run = await _upload(tls.url, tmp_path, cli_env, "--ca-bundle", str(tmp_path / "nope.pem"))
    assert run.returncode == 2, run.stderr
    [line] = run.stderr_lines
    assert "cannot load the CA bundle" in line and "nope.pem" in line
