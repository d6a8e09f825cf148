"""Coverage of the seed-aware comparison (``intervals.paired_runs_bootstrap``) in simulated benchmarks.

usage: python bench/seed_coverage.py [--reps 400] [--groups 150] [--seeds 1 3 5]
                                     [--seed-sd 0 0.1 0.3] [--noise-sd 0.3] [--resamples 1000]

Two arms of equal quality, each trained with S seeds, answer the same G groups (1-3 pairs each).
A pair is consistent with probability ``sigmoid(logit(p_g) + b_s + e_sg)``: ``p_g ~ Beta(2, 3)``
the group's difficulty (shared by both arms: the comparison is paired), ``b_s ~ N(0, seed_sd)``
the seed's overall shift (what a seed changes everywhere), ``e_sg ~ N(0, noise_sd)`` the seed's
effect on that group. The arms are equal, so the true difference of their seed-averaged EM is 0;
the script prints, per setting, the share of benchmarks whose 95 % interval covers 0 for

- ``two-level``: the shipped interval (groups and seeds resampled, the seed level carrying the
  between-seed variance beyond the rows' noise, widened by ``t_df / z``: ``benchmark/paired_stats.py``);
- ``groups only``: the seeds held fixed (a normal interval from ``stderr_groups``): what a
  comparison that ignores seed variance claims;

and the median width of each. The Monte Carlo error of a coverage rate is about
``sqrt(0.05 * 0.95 / reps)`` (0.011 at 400).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from consistbench.benchmark import intervals as I  # noqa: E402


def arm_runs(rng, logit_p, n_pairs, seeds: int, seed_sd: float, noise_sd: float) -> list[I.GroupStats]:
    """One arm's runs as GroupStats with a single ratio metric ``em`` (consistent pairs / pairs)."""
    ids = tuple(f"g{g:04d}" for g in range(len(n_pairs)))
    runs = []
    for _ in range(seeds):
        shift = rng.normal(0, seed_sd) + rng.normal(0, noise_sd, size=len(n_pairs))
        p = 1.0 / (1.0 + np.exp(-(logit_p + shift)))
        hits = rng.binomial(n_pairs, p)
        runs.append(I.GroupStats(ids, np.stack([hits, n_pairs], axis=1).astype(np.float64),
                                 {"em": I.Spec("ratio", 0, 1)}))
    return runs


def simulate(reps: int, groups: int, seeds: int, seed_sd: float, noise_sd: float, resamples: int) -> dict:
    rng = np.random.default_rng(12345)
    covered = {"two-level": 0, "groups only": 0}
    widths = {"two-level": [], "groups only": []}
    z = 1.959963984540054
    for r in range(reps):
        p = rng.beta(2, 3, size=groups)
        logit_p = np.log(p / (1 - p))
        n_pairs = rng.integers(1, 4, size=groups)
        a = arm_runs(rng, logit_p, n_pairs, seeds, seed_sd, noise_sd)
        b = arm_runs(rng, logit_p, n_pairs, seeds, seed_sd, noise_sd)
        m = I.paired_runs_bootstrap(a, b, I.BootstrapSettings(n_resamples=resamples, seed=r))["metrics"]["em"]
        covered["two-level"] += m["low"] <= 0 <= m["high"]
        widths["two-level"].append(m["high"] - m["low"])
        half = z * m["stderr_groups"]
        covered["groups only"] += abs(m["difference"]) <= half
        widths["groups only"].append(2 * half)
    return {k: (covered[k] / reps, float(np.median(widths[k]))) for k in covered}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--groups", type=int, default=150)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--seed-sd", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    ap.add_argument("--noise-sd", type=float, default=0.3)
    ap.add_argument("--resamples", type=int, default=1000)
    args = ap.parse_args()
    print(f"{args.reps} benchmarks of {args.groups} groups per row; noise_sd {args.noise_sd}")
    print("| seeds per arm | seed_sd | two-level: coverage | width | groups only: coverage | width |")
    print("|---:|---:|---:|---:|---:|---:|")
    for seeds in args.seeds:
        for seed_sd in args.seed_sd:
            t0 = time.perf_counter()
            res = simulate(args.reps, args.groups, seeds, seed_sd, args.noise_sd, args.resamples)
            (c2, w2), (c1, w1) = res["two-level"], res["groups only"]
            print(f"| {seeds} | {seed_sd:g} | {c2:.3f} | {w2:.3f} | {c1:.3f} | {w1:.3f} |"
                  f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
