"""The distant store under the service's quota, behind stunnel: this checkout's client, another's, and TransferManager.

    python benchmarks/quota_baseline.py --baseline ../other-checkout          # 2 × 1 GiB, 3 alternated runs
    python benchmarks/quota_baseline.py --baseline ../other-checkout --gib 4 --runs 2

One store for every run: the local store of this checkout with the distant scenario's quota setting
(``harness/quota.py``: 25 MB/s per connection, 20 ms per request, the service's default quotas) behind stunnel.
``benchmarks/clients/ours.py --service-quotas`` runs once with this checkout's package and once with the baseline's
(its ``PYTHONPATH``), then TransferManager at its defaults, in turn, the store's buckets refilled before each run.
Figures are each client's seconds (first request to ACTIVE for ours, to Complete for TransferManager), medians,
and the highest peak RSS of its runs.
Pairs larger than 1 GiB per source are sparse files, as in the scenario.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.data import ensure_pair, pair_parser, parse_pair_args
from harness.proc import GIB, client_argv, close_launcher, run_measured
from harness.quota import OURS_QUOTA, QUOTA
from harness.runner import TM, warm
from harness.store import STORE_ID
from harness.stunnel import Terminated, find_stunnel

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent


def main(argv: list[str] | None = None) -> int:
    parser = pair_parser(__doc__ or "", runs=3)
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout of the project")
    args = parse_pair_args(parser, argv)
    if not (args.baseline / "async_uploader" / "__init__.py").is_file():
        parser.error(f"--baseline {args.baseline}: not a checkout of the project (no async_uploader package)")
    stunnel, why = find_stunnel()
    if not stunnel:
        print(f"error: {why}", file=sys.stderr)
        return 2
    sources = ensure_pair(args.data_dir, int(args.gib * GIB), sparse=args.gib > 1)
    warm(sources)
    trees = {"this checkout": CHECKOUT.resolve(), "baseline": args.baseline.resolve()}
    seconds: dict[str, list[float]] = {**{name: [] for name in trees}, TM.label: []}
    rss: dict[str, list[float]] = {name: [] for name in seconds}
    try:
        with Terminated(stunnel, QUOTA.flags) as store:
            common = ["--endpoint", store.url, "--store-id", STORE_ID, "--source1", str(sources[0])]
            common += ["--source2", str(sources[1])]
            for index in range(args.runs):
                for name, values in seconds.items():
                    time.sleep(QUOTA.settle)
                    env = store.client_env()
                    if name in trees:
                        env["PYTHONPATH"] = str(trees[name])
                        argv_ = client_argv(OURS_QUOTA.script, [*common, *OURS_QUOTA.args])
                    else:
                        argv_ = client_argv(TM.script, [*common, *TM.args])
                    run = run_measured(name, argv_, timeout=900, env=env)
                    if not run.ok:
                        print(f"error: {name} failed: {run.error[:200]}", file=sys.stderr)
                        return 1
                    values.append(run.seconds)
                    rss[name].append(run.rss_mib)
                    print(f"run {index + 1}/{args.runs}: {name:<16} {run.seconds:7.2f} s", flush=True)
    finally:
        close_launcher()
    reference = statistics.median(seconds[TM.label])
    print(f"\n2 × {args.gib:g} GiB, service quota behind stunnel, load {os.getloadavg()[0]:.1f}; medians")
    for name, values in seconds.items():
        median = statistics.median(values)
        runs = ", ".join(f"{value:.2f}" for value in values)
        ratio, most = reference / median, max(rss[name])
        print(f"{name:<28} {median:7.2f} s  ({runs})  TransferManager ÷ this {ratio:.2f}×  peak RSS {most:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
