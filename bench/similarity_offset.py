"""The shared offset in an LM's query similarities, and what each consistency-weights distance sees.

usage: python bench/similarity_offset.py [--model DIR] [--dev DEV.jsonl] [--max-queries 128] [--threads 1]
                                         [--save S.npz]

Runs one model (default: the embedded SmolLM2-135M-Instruct) over the dev queries exactly as
``consistbench ref weights`` does (``consistency_weights.model_similarities``: chat template,
mean pooling over the question's tokens) and the sentence encoder (``reference_similarity``), then
prints, for the encoder and for each row of the model (embeddings, every layer, final norm): the
mean off-diagonal similarity over all pairs, over same-group pairs and over the others; the RMS
of the double-centred off-diagonal entries (the spread left once the offset is gone); the mean
absolute difference of the double-centred matrices *without* scaling; and the model's distance
to the encoder under ``paper``, ``centered``, ``cka`` and ``within_group``. docs/MERGING.md
("Which distance") quotes its output.
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

from consistbench.reference_method.consistency_weights import (  # noqa: E402
    DEFAULT_DEV,
    distance,
    double_centre,
    load_queries,
    model_similarities,
    reference_similarity,
    within_group_pairs,
)
from consistbench.reference_method.weights_file import WeightsOptions, row_keys  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the embedded SmolLM2)")
    ap.add_argument("--dev", default=str(DEFAULT_DEV))
    ap.add_argument("--max-queries", type=int, default=128, help="whole groups, file order (the cpu preset's 128)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save", default=None, help="also save the matrices (npz)")
    args = ap.parse_args()
    if args.model is None:
        from consistbench.benchmark.embedded import convert_smollm2

        args.model = str(convert_smollm2())
    t0 = time.perf_counter()
    queries = load_queries(args.dev, args.max_queries)
    groups = np.array([q.group for q in queries])
    ref = reference_similarity(queries)
    sims = model_similarities(args.model, queries, WeightsOptions(max_queries=args.max_queries), threads=args.threads)
    n = len(queries)
    iu = np.triu_indices(n, 1)
    same = groups[iu[0]] == groups[iu[1]]
    print(f"{n} queries in {len(set(groups))} groups; {within_group_pairs(list(groups))} of {n * (n - 1) // 2} pairs "
          f"share a group; {time.perf_counter() - t0:.0f} s")
    ref_c = double_centre(ref)[iu]

    def line(name, m, with_distances=True):
        c = double_centre(m)[iu]
        cells = [f"{m[iu].mean():.3f}", f"{m[iu][same].mean():.3f}", f"{m[iu][~same].mean():.3f}",
                 f"{np.sqrt(np.mean(c ** 2)):.3f}", f"{np.mean(np.abs(c - ref_c)):.3f}"]
        if with_distances:
            cells += [f"{distance(m, ref, k, groups=list(groups)):.3f}" for k in ("paper", "centered", "cka", "within_group")]
        print(f"| {name} | " + " | ".join(cells) + " |")

    print("| row | mean similarity | same group | other pairs | RMS centred | mean abs centred diff | paper | centered "
          "| cka | within_group |")
    print("|---|" + "---:|" * 9)
    line("encoder", ref, with_distances=False)
    for key in row_keys(len(sims) - 2):
        line(key, sims[key])
    gap = max(abs(distance(sims[k], ref, "paper") - (sims[k][iu].mean() - ref[iu].mean())) for k in row_keys(len(sims) - 2)
              if k != "embed")
    print(f"largest |paper - (mean S - mean S_r)| over the layers and the final norm: {gap:.5f}")
    if args.save:
        np.savez_compressed(args.save, reference=ref, groups=groups, **{f"model/{k}": v for k, v in sims.items()})


if __name__ == "__main__":
    main()
