"""The package as an institution installs it: a wheel built from the checkout, with no warning, carrying the
license, its SPDX expression and classifiers, installed into a fresh venv (offline: no dependency is fetched)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.version import Version

from async_uploader.core.version import VERSION
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def _setuptools_reads_spdx() -> bool:
    try:
        return Version(metadata.version("setuptools")) >= Version("77")
    except metadata.PackageNotFoundError:
        return False


def _quiet_env() -> dict[str, str]:
    """The environment, less what makes setuptools say something about this machine rather than the package."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.mark.skipif(
    not _setuptools_reads_spdx(), reason="needs setuptools>=77 beside the tests (the test extra; make installs it)"
)
def test_a_wheel_builds_without_warnings_carries_the_license_and_installs(tmp_path: Path) -> None:
    source = tmp_path / "checkout"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO_ROOT / name, source / name)
    shutil.copytree(
        REPO_ROOT / "async_uploader", source / "async_uploader", ignore=shutil.ignore_patterns("__pycache__")
    )
    out = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v", "-w", str(out), "./checkout"],
        cwd=tmp_path,
        env=_quiet_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    said = [
        line
        for line in (build.stdout + build.stderr).splitlines()
        if ("warning" in line.lower() or "deprecat" in line.lower()) and "Location 'file:" not in line
    ]
    assert said == [], said
    [wheel] = out.glob("async_uploader-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(name.rsplit("/", 1)[0] for name in names if name.endswith(".dist-info/METADATA"))
        meta = archive.read(f"{info}/METADATA").decode()
        assert f"{info}/licenses/LICENSE" in names
        assert "Apache License" in archive.read(f"{info}/licenses/LICENSE").decode()[:200]
    assert "License-Expression: Apache-2.0" in meta and "License-File: LICENSE" in meta
    assert "Classifier: Programming Language :: Python :: 3.11" in meta and "Requires-Dist: shtab" in meta
    assert f"\nVersion: {VERSION}\n" in meta and wheel.name.startswith(f"async_uploader-{VERSION}-")  # one literal

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        env=_quiet_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0 and "warning" not in install.stderr.lower(), install.stderr
    shown = subprocess.run(
        [
            str(python),
            "-c",
            "from importlib import metadata as m; d = m.distribution('async-uploader'); "
            "print(d.metadata['License-Expression']); print(sorted(str(f) for f in d.files if 'LICENSE' in str(f)))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert shown.stdout.splitlines()[0] == "Apache-2.0" and "LICENSE" in shown.stdout.splitlines()[1]
    assert (venv / "bin" / "async-uploader").exists()
