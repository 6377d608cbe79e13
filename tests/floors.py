"""The declared dependency floors, proven: ``python tests/floors.py requirements`` prints ``name==floor`` for each
runtime dependency of pyproject.toml; ``python tests/floors.py smoke`` (in a venv holding exactly those) imports
the package, runs ``--version`` and uploads a small paired read set into the local store.

``make floors`` builds ``.venv-min`` from the first and runs the second; ``make test`` depends on it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_FLOOR = re.compile(r"([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*(?:,.*)?")


def requirements() -> list[str]:
    """``name==floor`` for every dependency; a dependency without a ``>=`` floor is an error."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = []
    for spec in project["dependencies"]:
        match = _FLOOR.fullmatch(spec.split(";")[0].strip())
        if match is None:
            raise SystemExit(f"dependency {spec!r} declares no floor (NAME>=VERSION)")
        pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


async def _smoke() -> None:
    from async_uploader.cli.demo import write_fastq_gz  # noqa: PLC0415 (runs in the floors venv)
    from async_uploader.emulator import LocalStore, StoreOptions  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        sources = []
        for n in (1, 2):
            path = directory / f"r{n}.fq.gz"
            write_fastq_gz(path, 300_000, mate=n)  # real FASTQ: it is checked, hashed and verified
            sources.append(str(path))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and "proxy" not in k.lower()}
        env.update(
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_EC2_METADATA_DISABLED="true",
            ASYNC_UPLOADER_HOME=str(directory / "home"),
        )
        async with LocalStore(StoreOptions(data_dir=directory / "store")) as store:
            argv = [
                sys.executable,
                "-m",
                "async_uploader",
                "upload",
                *sources,
                "--store-id",
                "1234567890",
                "--file-type",
                "FASTQ",
                "--subject-id",
                "s",
                "--sample-id",
                "x",
                "--name",
                "floors",
                "--endpoint-url",
                store.url,
                "--part-size",
                "64KiB",
                "--json",
                "--no-progress",
            ]
            process = await asyncio.create_subprocess_exec(
                *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            out, err = await asyncio.wait_for(process.communicate(), 120)
        if process.returncode != 0:
            raise SystemExit(f"the upload failed ({process.returncode}): {err.decode()}")
        result = json.loads(out)
        if result["status"] != "ACTIVE" or not result["verified"] or result["parts"]["SOURCE1"] < 4:
            raise SystemExit(f"unexpected result {result}")


def smoke() -> None:
    from importlib.metadata import version  # noqa: PLC0415

    import async_uploader  # noqa: PLC0415

    installed = {pin.split("==")[0]: version(pin.split("==")[0].split("[")[0]) for pin in requirements()}
    wanted = dict(pin.split("==") for pin in requirements())
    if installed != wanted:
        raise SystemExit(f"this venv does not hold the floors: {installed} != {wanted}")
    shown = subprocess.run(
        [sys.executable, "-m", "async_uploader", "--version"], capture_output=True, text=True, check=True
    ).stdout
    if not shown.startswith(f"async-uploader {async_uploader.__version__}"):
        raise SystemExit(f"--version printed {shown!r}")
    asyncio.run(_smoke())
    print("floors: " + ", ".join(requirements()) + ": import, --version and an upload into the local store passed")


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "requirements":
        print("\n".join(requirements()))
    elif command == "smoke":
        smoke()
    else:
        raise SystemExit("usage: python tests/floors.py requirements|smoke")
