"""Start-up: what a short command costs, whole process, against AWS's TransferManager.

    python benchmarks/startup.py                    # 7 alternated runs of each case
    python benchmarks/startup.py --runs 3 --json    # one JSON object (the medians and every run) on stdout
    python benchmarks/startup.py --baseline ../main  # each of our cases also run from another checkout, alternated
    PYTHONPATH=/path/to/other/checkout python benchmarks/startup.py   # every case from another checkout

Cases: ``async-uploader --version``, ``--help``, ``upload --help``; an upload of one tiny paired FASTQ.gz with
``--no-wait`` (Create, the parts, Complete: what TransferManager's ``upload_read_set(wait=False)`` does) and with
the defaults (then also waiting for ACTIVE and verifying); and TransferManager uploading the same pair
(``benchmarks/clients/transfer_manager.py``). Each is its own process, run from an empty folder (so
``python -m async_uploader`` takes the package from the path, not the working directory), timed from spawn to exit:
wall time, and CPU as user + system of the reaped child (``getrusage(RUSAGE_CHILDREN)`` before and after). Runs
alternate case by case; the figures are medians. One untimed run of each comes first, and bytecode is cached (in a
folder of its own) as for an installed package, so no case pays for compiling.

The store is ``async-uploader serve`` on 127.0.0.1, port 0, started once; its own CPU is not counted. The load
average is printed beside the results: on a shared machine compare ratios taken in one run, not absolute times.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
TM_CLIENT = HERE / "clients" / "transfer_manager.py"
STORE_ID = "1234567890"
READS = 200
"""Reads per source: two files of a few kB, so start-up is all there is to measure."""


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]
    tree: str | None = None
    """Run with this checkout first on PYTHONPATH (``--baseline``), else with the environment's own."""


@dataclass
class Runs:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {
            "wall": statistics.median(self.wall),
            "cpu": statistics.median(self.cpu),
            "cpu_min": min(self.cpu),
            "cpu_max": max(self.cpu),
            "walls": self.wall,
            "cpus": self.cpu,
        }


def write_pair(folder: Path) -> tuple[Path, Path]:
    """Two gzip-compressed FASTQ mates of ``READS`` reads each."""
    paths = []
    for mate in (1, 2):
        path = folder / f"tiny_R{mate}.fastq.gz"
        records = (f"@startup:{n} {mate}:N:0\n{'ACGT' * 25}\n+\n{'I' * 100}\n".encode() for n in range(READS))
        path.write_bytes(gzip.compress(b"".join(records), mtime=0))
        paths.append(path)
    return paths[0], paths[1]


def client_env(folder: Path) -> dict[str, str]:
    """The store's test keys, no AWS configuration of this machine, a private uploader home, cached bytecode."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        ASYNC_UPLOADER_HOME=str(folder / "home"),
        PYTHONPYCACHEPREFIX=str(folder / "pycache"),
    )
    return env


@contextmanager
def store(folder: Path, env: dict[str, str]) -> Iterator[str]:
    """``async-uploader serve`` on 127.0.0.1, port 0: its URL, until the block ends."""
    command = [sys.executable, "-m", "async_uploader", "serve", "--port", "0", "--discard"]
    command += ["--data-dir", str(folder / "store"), "--ingest-delay", "0"]
    with subprocess.Popen(
        command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            if not url.startswith("http"):
                raise SystemExit(f"the store did not start (exit {proc.poll()})")
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def cases(url: str, sources: tuple[Path, Path], baseline: str | None = None) -> list[Case]:
    """Ours and TransferManager's; with ``baseline``, each of ours twice: from ``baseline``, then as configured."""
    chosen = []
    for case in _cases(url, sources):
        if baseline is not None and not case.name.startswith("TransferManager"):
            chosen.append(Case(f"{case.name} [baseline]", case.argv, tree=baseline))
        chosen.append(case)
    return chosen


def _cases(url: str, sources: tuple[Path, Path]) -> list[Case]:
    ours = (sys.executable, "-m", "async_uploader")
    upload = (*ours, "upload", str(sources[0]), str(sources[1]), "--endpoint-url", url, "--region", "us-east-1")
    upload += ("--store-id", STORE_ID, "--file-type", "FASTQ", "--subject-id", "S1", "--sample-id", "X1")
    upload += ("--if-exists", "upload", "--name")
    tm = (sys.executable, str(TM_CLIENT), "--endpoint", url, "--store-id", STORE_ID)
    tm += ("--source1", str(sources[0]), "--source2", str(sources[1]))
    return [
        Case("async-uploader --version", (*ours, "--version")),
        Case("async-uploader --help", (*ours, "--help")),
        Case("async-uploader upload --help", (*ours, "upload", "--help")),
        Case("async-uploader upload --no-wait", (*upload, "startup", "--no-wait")),
        Case("async-uploader upload (wait, verify)", (*upload, "startup")),
        Case("TransferManager upload", tm),
    ]


def run_once(case: Case, folder: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one process of ``case``; it must succeed."""
    if case.tree is not None:
        env = {**env, "PYTHONPATH": os.pathsep.join([case.tree, env.get("PYTHONPATH", "")])}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(case.argv, cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{case.name} failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(runs: int, baseline: str | None = None, log: bool = True) -> dict[str, object]:
    """Every case ``runs`` times, alternated, after one untimed run of each: medians and every run."""
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as tmp:
        folder = Path(tmp)
        sources = write_pair(folder)
        env = client_env(folder)
        load_before = os.getloadavg()
        with store(folder, env) as url:
            chosen = cases(url, sources, baseline)
            for case in chosen:  # untimed: bytecode written, files in the page cache
                run_once(case, folder, env)
            results = {case.name: Runs() for case in chosen}
            for index in range(runs):
                for case in chosen:
                    wall, cpu = run_once(case, folder, env)
                    results[case.name].wall.append(wall)
                    results[case.name].cpu.append(cpu)
                if log:
                    print(f"run {index + 1}/{runs} done, load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
        load_after = os.getloadavg()
    summary = {name: runs_of.summary() for name, runs_of in results.items()}
    tm = summary["TransferManager upload"]
    ours = summary["async-uploader upload --no-wait"]
    result: dict[str, object] = {
        "runs": runs,
        "python": sys.version.split()[0],
        "package": _package_path(),
        "baseline": baseline,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "cases": summary,
        "upload_cpu_ratio": _ratio(ours["cpu"], tm["cpu"]),
        "upload_wall_ratio": _ratio(ours["wall"], tm["wall"]),
    }
    if baseline is not None:
        before = summary["async-uploader upload --no-wait [baseline]"]
        result["baseline_upload_cpu_ratio"] = _ratio(before["cpu"], tm["cpu"])
    return result


def _ratio(a: object, b: object) -> float:
    assert isinstance(a, float) and isinstance(b, float)
    return round(a / b, 3) if b else float("nan")


def _package_path() -> str:
    """Where ``python -m async_uploader`` finds the package with this environment (from an empty folder)."""
    code = "import importlib.util; print(importlib.util.find_spec('async_uploader').origin)"
    with tempfile.TemporaryDirectory() as empty:
        found = subprocess.run([sys.executable, "-c", code], cwd=empty, capture_output=True, text=True, check=False)
    return str(Path(found.stdout.strip()).parent)


def table(result: dict[str, object]) -> str:
    cases = result["cases"]
    assert isinstance(cases, dict)
    lines = [
        f"package: {result['package']}; Python {result['python']}; {result['runs']} alternated runs, medians",
        f"load average before {result['load_before']}, after {result['load_after']}",
        *([f"cases marked [baseline] ran from {result['baseline']}"] if result.get("baseline") else []),
        "",
        f"{'case':48} {'wall s':>8} {'CPU s':>8} {'CPU min-max':>14}",
    ]
    for name, row in cases.items():
        span = f"{row['cpu_min']:.3f}-{row['cpu_max']:.3f}"
        lines.append(f"{name:48} {row['wall']:8.3f} {row['cpu']:8.3f} {span:>14}")
    lines.append("")
    lines.append(
        f"upload --no-wait / TransferManager: CPU {result['upload_cpu_ratio']:.2f}x, "
        f"wall {result['upload_wall_ratio']:.2f}x"
    )
    if result.get("baseline"):
        lines.append(
            f"[baseline] = {result['baseline']}: CPU {result['baseline_upload_cpu_ratio']:.2f}x TransferManager's"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each case (default 7)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument(
        "--baseline", metavar="TREE", help="also run each of our cases from this checkout (first on PYTHONPATH)"
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    baseline = str(Path(args.baseline).resolve()) if args.baseline else None
    result = measure(args.runs, baseline)
    print(json.dumps(result) if args.json else table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
