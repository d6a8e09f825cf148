"""Triplet overhead: one training step with CE + triplet vs plain SFT, same batch, same process.

usage: python bench/triplet_overhead.py [--data SYNTH.jsonl] [--model DIR] [--batch-size 1]
                                        [--repeats 3] [--max-length 512]

Loads SmolLM2 (the embedded model by default) once, builds one batch of real triplets (anchor,
positive, negative: 3 x batch-size sequences) with the trainer's own collator, and times a full
training step (``ConsistencyTrainer.compute_loss``, backward, AdamW step) with ``alpha = 1``
(CE + triplet) and with ``alpha = 0`` (plain SFT: the same sequences, the same CE). The two are
run alternately after one warm-up step each and compared by their medians, so drift in the
machine's load hits both. Prints the ratio; the target is at most 1.3x. The triplet term
reads the hidden states of the same forward pass (``output_hidden_states=True``), so the
expected overhead is the pooling and three distances, not a second forward pass.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def synthetic_rows():
    """Two train questions of median passage length with made-up variants, when no synthetic file is given."""
    from consistbench.benchmark.schema import parse_row
    from consistbench.reference_method.synth import default_train_file

    qs = [("How do I copy a list?", "Use list.copy() or slicing: new = old[:].",
           "Lists can be copied with the copy() method or with slicing; new = old[:] makes a shallow copy."),
          ("How do I sort a dictionary by value?", "Use sorted() on d.items() with a key function.",
           "Dictionaries keep insertion order; sorted(d.items(), key=lambda kv: kv[1]) returns the items "
           "ordered by value, and dict() of that list gives a new dictionary in that order.")]
    if default_train_file().is_file():
        from consistbench.benchmark.schema import load_data

        rows = sorted((r for r in load_data(default_train_file()) if r.variant_type == "original"),
                      key=lambda r: (len(r.context), r.id))
        mid = len(rows) // 2  # two questions of median context length: a typical step
        qs = [(r.question, r.reference, r.context) for r in rows[mid:mid + 2]]
    out = []
    for i, (q, a, c) in enumerate(qs):
        base = {"group_id": f"g{i}", "split": "train", "context": c, "reference": a, "passage_id": f"p{i}",
                "source": "bench"}
        out.append(parse_row(dict(base, id=f"g{i}-orig", variant_type="original", question=q), "bench"))
        out.append(parse_row(dict(base, id=f"g{i}-para", variant_type="paraphrase",
                                  question="Could you tell me: " + q[0].lower() + q[1:]), "bench"))
    return out


def bench_rows(data: str | None):
    """The rows of ``data`` (a synthetic set), or :func:`synthetic_rows` when none is given."""
    if data:
        from consistbench.benchmark.schema import load_data

        return load_data(data)
    return synthetic_rows()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="synthetic data (default: two train questions, made-up variants)")
    ap.add_argument("--model", default=None, help="model directory (default: the embedded SmolLM2)")
    ap.add_argument("--batch-size", type=int, default=1, help="triplets per step (3 sequences each)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=512)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from consistbench.benchmark.embedded import convert_smollm2
    from consistbench.reference_method.collator import CompletionCollator
    from consistbench.reference_method.consistency_config import ConsistencyConfig
    from consistbench.reference_method.consistency_trainer import ConsistencyTrainer
    from consistbench.reference_method.train import prepare_data
    from consistbench.reference_method.triplets import MiningConfig

    model_dir = args.model or str(convert_smollm2())
    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = bench_rows(args.data)
    prepared = prepare_data(rows, "all", tok, mining=MiningConfig(negatives="random"), max_length=args.max_length)
    items = prepared.items[:args.batch_size]
    if len(items) < args.batch_size:
        raise SystemExit(f"only {len(items)} triplets of at most {args.max_length} tokens")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    batch = CompletionCollator(pad)(items)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)  # a real optimizer step that leaves the weights alone

    def trainer(alpha: float) -> ConsistencyTrainer:
        cfg = ConsistencyConfig(output_dir="/tmp/consistbench-bench-unused", alpha=alpha, use_cpu=True,
                                report_to="none", disable_tqdm=True)
        return ConsistencyTrainer(model=model, args=cfg)

    runs = {"ce+triplet": trainer(1.0), "sft": trainer(0.0)}

    def step(t: ConsistencyTrainer) -> float:
        start = time.perf_counter()
        loss = t.compute_loss(model, dict(batch))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {k: [] for k in runs}
    for name, t in runs.items():
        step(t)  # warm-up
    for _ in range(args.repeats):
        for name, t in runs.items():
            times[name].append(step(t))
    med = {k: statistics.median(v) for k, v in times.items()}
    n_tok = int(batch["attention_mask"].sum())
    print(f"model {model_dir}")
    print(f"batch: {args.batch_size} triplet(s) = {batch['input_ids'].shape[0]} sequences, {n_tok} tokens "
          f"(padded {tuple(batch['input_ids'].shape)}); threads {torch.get_num_threads()}")
    for k, v in times.items():
        print(f"{k:>11}: median {med[k]:.2f} s/step  (runs: {', '.join(f'{x:.2f}' for x in v)})")
    print(f"ratio ce+triplet / sft: {med['ce+triplet'] / med['sft']:.3f}x (target <= 1.3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
