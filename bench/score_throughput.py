"""Scoring throughput: all metrics vs bert_score.BERTScorer alone on the same 10,000 pairs.

usage: python bench/score_throughput.py [--pairs 10000] [--repeats 3]

Builds realistic responses from documentation sentences (every pair distinct, so our shortcut
for identical strings gives no advantage), loads both encoders before timing, runs each side
``repeats`` times alternately and compares the best times. Prints pairs/s and the ratio
(ours / BERTScorer alone); the target is at least 0.8.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from consistbench.benchmark.metrics import ScoreSettings, Scored, bert_scorer, compute_all  # noqa: E402


def sentences() -> list[str]:
    from consistbench.benchmark.fileio import read_jsonl

    data = Path(__file__).resolve().parents[1] / "tasks" / "consistency" / "data"
    texts = []
    for split in ("train", "dev", "test"):
        if (data / f"{split}.jsonl").is_file():
            texts += [r["context"] for r in read_jsonl(data / f"{split}.jsonl")]
    if not texts:  # data not built yet: the documentation passages themselves
        from consistbench.benchmark import corpus

        texts = [p.text for p, _ in zip(corpus.iter_passages(kinds=("faq", "howto")), range(3000))]
    out = sorted({s.strip() for t in texts for s in re.split(r"(?<=[.!?])\s+|\n", t) if 6 <= len(s.split()) <= 45})
    if len(out) < 1000:
        raise SystemExit("not enough sentences: build the data first (consistbench data build)")
    return out


def make_rows(n_pairs: int, seed: int = 0) -> list[Scored]:
    rng = random.Random(seed)
    sents = sentences()
    rows, types = [], ["how_to", "plural_article", "paraphrase"]
    g = 0
    while sum(1 for r in rows if r.variant_type != "original") < n_pairs:
        gid = f"g{g}"
        ref = rng.choice(sents)
        orig = " ".join(rng.sample(sents, 2))
        rows.append(Scored(f"{gid}-o", gid, "original", orig, ref))
        for k, t in enumerate(types[: rng.randint(1, 3)]):
            words = orig.split()
            rng.shuffle(words[: len(words) // 3])  # a near answer, never identical
            rows.append(Scored(f"{gid}-{k}", gid, t, " ".join(words) + f" ({k})", ref))
        g += 1
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = make_rows(args.pairs)
    originals = {r.group_id: r.response for r in rows if r.variant_type == "original"}
    pairs = [(r.response, originals[r.group_id]) for r in rows if r.variant_type != "original"]
    n = len(pairs)
    settings = ScoreSettings()
    scorer = bert_scorer(settings.bertscore)  # both sides use this one loaded encoder
    scorer.score(["warm up"], ["warm up please"])

    def alone():
        scorer.score([p[0] for p in pairs], [p[1] for p in pairs], batch_size=settings.bertscore.batch_size)

    def ours():
        compute_all(rows, settings)

    best = {"bertscore_alone": float("inf"), "consistbench_all_metrics": float("inf")}
    for _ in range(args.repeats):
        for name, fn in (("bertscore_alone", alone), ("consistbench_all_metrics", ours)):
            from consistbench.benchmark import metrics

            metrics._rouge_tokens.cache_clear()  # no credit for work cached by an earlier repeat
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    print(f"pairs: {n} (rows {len(rows)}), torch threads: {__import__('torch').get_num_threads()}")
    for name, sec in best.items():
        print(f"{name:>26}: {sec:7.2f} s  {n / sec:8.1f} pairs/s")
    ratio = best["bertscore_alone"] / best["consistbench_all_metrics"]
    print(f"ratio (all metrics / BERTScorer alone, pairs per second): {ratio:.2f}  (target >= 0.80)")


if __name__ == "__main__":
    main()
