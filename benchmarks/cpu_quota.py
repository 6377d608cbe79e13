"""This checkout's client and another's, in turn, in a cgroup with a CPU quota; the store outside it.

    python benchmarks/cpu_quota.py --baseline ../other-checkout                  # half a CPU, 2 × 1 GiB, 7 runs
    python benchmarks/cpu_quota.py --baseline ../other-checkout --cpus 1 --tls --runs 5

A container's CPU limit (or systemd's ``CPUQuota=``) holds the uploader alone. The script makes a cgroup of
``--cpus`` CPUs' worth of time per period (cgroup v1's cpu and cpuacct hierarchies, or v2 where its cpu controller
is enabled at the top), and every client process moves itself into it before it starts (``sh -c 'echo $$ >
cgroup.procs; exec ...'``); the local store (``--discard``, plain HTTP, or its own TLS with ``--tls``) runs outside.
``benchmarks/clients/ours.py`` runs with this checkout's package and with the baseline's (its ``PYTHONPATH``), in
turn. Figures are each client's whole-process wall and CPU seconds, medians (the wall's spread beside). Making a
cgroup needs root and a writable cgroup filesystem; where it cannot be made, the script says why and exits 2. The
group is removed at the end.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.data import ensure_pair, pair_parser, parse_pair_args
from harness.proc import GIB, Measured, client_argv, close_launcher, run_measured
from harness.report import ok_text, summarize
from harness.runner import warm
from harness.store import STORE_ID, Store

from async_uploader.edge.cores import cgroup_mounts

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
PERIOD_US = 100_000


class NoGroup(Exception):
    """No cgroup with a CPU quota can be made here."""


@contextmanager
def quota_group(cpus: float) -> Iterator[list[Path]]:
    """A cgroup of ``cpus`` CPUs' worth of time: the ``cgroup.procs`` files a process joins it by. Raises NoGroup
    where none can be made."""
    name = f"async-uploader-bench-{os.getpid()}"
    made: list[Path] = []
    try:
        try:
            procs = _make_group(name, cpus, made)
        except OSError as exc:
            raise NoGroup(str(exc)) from exc
        yield procs
    finally:
        for group in made:
            for _ in range(50):  # the last client has been waited for: the kernel lets the group go within moments
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def _make_group(name: str, cpus: float, made: list[Path]) -> list[Path]:
    """Make the group (each directory made is added to ``made``); its ``cgroup.procs`` files."""
    mounts = cgroup_mounts(Path("/proc/self/mountinfo").read_text())  # the package's own reading of it
    if "cpu" in mounts and "cpuacct" in mounts:
        cpu = mounts["cpu"].point
        for top in dict.fromkeys((cpu, mounts["cpuacct"].point)):
            (top / name).mkdir()
            made.append(top / name)
        (cpu / name / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (cpu / name / "cpu.cfs_quota_us").write_text(str(round(cpus * PERIOD_US)))
    elif "" in mounts and "cpu" in (mounts[""].point / "cgroup.subtree_control").read_text().split():
        v2 = mounts[""].point
        (v2 / name).mkdir()
        made.append(v2 / name)
        (v2 / name / "cpu.max").write_text(f"{round(cpus * PERIOD_US)} {PERIOD_US}")
    else:
        raise OSError("no cgroup hierarchy with the cpu controller (v1 cpu and cpuacct, or v2's cpu)")
    return [group / "cgroup.procs" for group in made]


def _in_group(procs: list[Path], argv: list[str]) -> list[str]:
    """``argv`` run by a shell that first moves itself into the group (the exec keeps the process)."""
    joins = "; ".join(f"echo $$ > '{path}'" for path in procs)
    return [shutil.which("sh") or "/bin/sh", "-c", f'{joins}; exec "$@"', "sh", *argv]


def main(argv: list[str] | None = None) -> int:
    parser = pair_parser(__doc__ or "", runs=7)
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout of the project")
    parser.add_argument("--cpus", type=float, default=0.5, help="CPUs' worth of time the group may use (0.5)")
    parser.add_argument("--tls", action="store_true", help="the store serves its own TLS (default: plain HTTP)")
    args = parse_pair_args(parser, argv)
    if not (args.baseline / "async_uploader" / "__init__.py").is_file():
        parser.error(f"--baseline {args.baseline}: not a checkout of the project (no async_uploader package)")
    if not 0.01 <= args.cpus <= (os.cpu_count() or 1):
        parser.error(f"--cpus {args.cpus:g}: from 0.01 to this machine's {os.cpu_count()} CPUs")
    sources = ensure_pair(args.data_dir, int(args.gib * GIB))
    warm(sources)
    trees = {"this checkout": CHECKOUT.resolve(), "baseline": args.baseline.resolve()}
    runs: dict[str, list[Measured]] = {name: [] for name in trees}
    try:
        with quota_group(args.cpus) as procs, Store(tls=args.tls) as store:
            common = ["--endpoint", store.url, "--store-id", STORE_ID, "--source1", str(sources[0])]
            common += ["--source2", str(sources[1])]
            for index in range(args.runs):
                for name, tree in trees.items():
                    env = {**store.client_env(), "PYTHONPATH": str(tree)}
                    command = _in_group(procs, client_argv("ours", common))
                    run = run_measured(name, command, timeout=600, env=env)
                    runs[name].append(run)
                    state = "" if run.ok else f"  FAILED: {run.error[:120]}"
                    print(f"[{index + 1}/{args.runs}] {name:<14} wall {run.wall:6.2f} s  cpu {run.cpu:6.2f} s{state}")
    except NoGroup as exc:
        print(f"error: cannot make a cgroup with a CPU quota here: {exc}", file=sys.stderr)
        return 2
    finally:
        close_launcher()
    scheme = "TLS" if args.tls else "plain HTTP"
    print(f"\n2 × {args.gib:g} GiB, {scheme}, each client in a group of {args.cpus:g} CPU; medians of {args.runs} runs")
    for name, measured in runs.items():
        wall, cpu = summarize(measured, lambda run: run.wall), summarize(measured, lambda run: run.cpu)
        spread = f"{wall.low:.2f}-{wall.high:.2f}"
        print(f"{name:<16} wall {wall.median:6.2f} s ({spread})  cpu {cpu.median:6.2f} s  ran {ok_text(measured)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
