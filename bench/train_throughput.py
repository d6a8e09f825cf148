"""Training throughput: sequences per second of the ``cpu`` preset's step (padded random batches,
answer-only logits) against the faster paths, same triplets, same process, alternated.

usage: python bench/train_throughput.py [--data FILE] [--model DIR] [--steps 3] [--batch-size 4]
                                        [--max-length 384] [--threads 2] [--grad-ratio-cost] [--paths A,B]

Loads SmolLM2 (the embedded model by default) with the ``cpu`` preset's LoRA (rank 16 on every
linear layer of all 30 layers) and mines triplets (random negatives) from ``--data`` (default: the
shipped dev split, whose groups stand in for a synthetic set), keeping those of at most
``--max-length`` tokens. It draws ``steps x batch-size`` triplets with a fixed seed and times a
full training step (``ConsistencyTrainer.compute_loss`` with CE + triplet, backward, AdamW with
learning rate 0 so the weights stay put) on each path, over the same triplets:

- ``padded`` (the old path): the ``cpu`` preset (random batches padded to their longest row,
  answer-only logits);
- ``grouped``: the same, batches length-grouped (the drawn triplets sorted by length and cut into
  batches, as ``train_sampling_strategy="group_by_length"`` does within each mega-batch of 50 batches);
- ``padding_free``: each sequence in its own unpadded forward call;
- ``padding_free+share_prefix``: ... and the passage an anchor and its positive share computed once;
- ``new``: ``share_prefix`` + ``padding_free`` on the length-grouped batches (the new path);
- ``grouped+share_prefix``: ``share_prefix`` on the length-grouped batches in one padded call (the
  GPU-friendly form: few large calls);
- ``... +bf16``: ``padding_free+share_prefix`` under torch's bfloat16 autocast on CPU (``bf16=True``;
  other numerics);
- with ``--grad-ratio-cost``: ``padding_free+share_prefix`` measuring the gradient ratio on every step
  (what a logging step costs with ``log_grad_ratio``).

After one warm-up step per path (on one triplet), the paths run in turn, one step each,
``--steps`` rounds, so that drift in the machine's load hits all of them. On a loaded machine pass
``--threads 1`` (and ``OMP_NUM_THREADS=1``): two OpenMP threads on oversubscribed cores wait on each
other at every op (a one-triplet step took 155 s with 2 threads at load average 8, 24 s with 1).
Prints sequences per second per path, the ratio to ``padded``, the headline ``new / padded``
ratio, and checks that every fp32 path's loss equals that of the padded path on the same batches
(``padded`` for random batches, ``grouped`` for grouped ones). ``--paths a,b``: only those (and
``padded``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "tasks" / "consistency" / "data" / "dev.jsonl"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="rows with groups of variants (default: the dev split)")
    ap.add_argument("--model", default=None, help="model directory (default: the embedded SmolLM2)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per path (after one warm-up)")
    ap.add_argument("--batch-size", type=int, default=4, help="triplets per step (3 sequences each)")
    ap.add_argument("--max-length", type=int, default=384)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grad-ratio-cost", action="store_true", help="also time a step that measures the gradient ratio")
    ap.add_argument("--paths", default=None, help="comma-separated subset of the paths (default: all)")
    args = ap.parse_args()

    import torch
    from transformers import AutoTokenizer

    from consistbench.benchmark.embedded import convert_smollm2
    from consistbench.benchmark.schema import load_data
    from consistbench.reference_method.collator import IGNORE_INDEX, CompletionCollator
    from consistbench.reference_method.consistency_config import ConsistencyConfig
    from consistbench.reference_method.consistency_trainer import ConsistencyTrainer
    from consistbench.reference_method.packing import layout_of
    from consistbench.reference_method.samplers import example_length
    from consistbench.reference_method.train import load_model, prepare_data
    from consistbench.reference_method.triplets import MiningConfig

    torch.set_num_threads(args.threads)
    model_dir = args.model or str(convert_smollm2())
    tok = AutoTokenizer.from_pretrained(model_dir)
    prepared = prepare_data(load_data(args.data), "all", tok, mining=MiningConfig(negatives="random"),
                            max_length=args.max_length)
    n = args.steps * args.batch_size
    pool = random.Random(args.seed).sample(prepared.items, n)
    collate = CompletionCollator(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    random_batches = [collate(pool[i:i + args.batch_size]) for i in range(0, n, args.batch_size)]
    # the drawn triplets as one of GroupedSampler's mega-batches: sorted by length, cut into batches
    lengths = [example_length(it) for it in pool]
    grouped = sorted(range(n), key=lambda k: -lengths[k])
    grouped_batches = [collate([pool[k] for k in grouped[i:i + args.batch_size]]) for i in range(0, n, args.batch_size)]

    base = dict(output_dir="/tmp/consistbench-bench-unused", use_cpu=True, report_to="none", disable_tqdm=True,
                alpha=1.0, margin=0.2, use_lora=True, lora_r=16, lora_alpha=32, answer_logits_only=True,
                log_grad_ratio=False)
    torch.manual_seed(0)
    model = load_model(Path(model_dir), ConsistencyConfig(**base))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
    fast = dict(padding_free=True, share_prefix=True)
    paths = {  # name: (config fields, batches, autocast)
        "padded": ({}, random_batches, False),
        "grouped": ({}, grouped_batches, False),
        "padding_free": ({"padding_free": True}, random_batches, False),
        "padding_free+share_prefix": (fast, random_batches, False),
        "new": (fast, grouped_batches, False),
        "grouped+share_prefix": ({"share_prefix": True}, grouped_batches, False),
        "padding_free+share_prefix+bf16": (fast, random_batches, True),
    }
    if args.grad_ratio_cost:
        paths["padding_free+share_prefix, gradient ratio"] = (dict(fast, log_grad_ratio=True, logging_steps=1),
                                                              random_batches, False)
    if args.paths:
        keep = {"padded", *args.paths.split(",")}
        paths = {k: v for k, v in paths.items() if k in keep}
    trainers = {name: ConsistencyTrainer(model=model, args=ConsistencyConfig(**dict(base, **fields)))
                for name, (fields, _, _) in paths.items()}

    def step(name: str, batch) -> tuple[float, float]:
        trainer, (_, _, bf16) = trainers[name], paths[name]
        items = torch.tensor(int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()))
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        start = time.perf_counter()
        with ctx:
            loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=items)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        trainer.state.global_step += 1  # a measuring path measures on every step
        return time.perf_counter() - start, loss.item()

    warm = collate(pool[:1])  # one triplet: the libraries' first-call costs, cheaply
    for name in paths:
        t, _ = step(name, warm)  # warm-up
        print(f"  warm-up: {name:<40} {t:6.2f} s", flush=True)
    times = {name: [] for name in paths}
    losses = {name: [] for name in paths}
    for r in range(args.steps):
        for name, (_, batches, _) in paths.items():
            t, loss = step(name, batches[r])
            times[name].append(t)
            losses[name].append(loss)
            print(f"  round {r}: {name:<42} {t:6.2f} s  loss {loss:.5f}", flush=True)
        if "new" in paths:  # a running figure, in case the run is cut short
            print(f"  after round {r}: new / padded {sum(times['padded']) / sum(times['new']):.2f}x", flush=True)
    tokens = sum(int(b["attention_mask"].sum()) for b in random_batches)
    padded = sum(b["input_ids"].numel() for b in random_batches)
    padded_grouped = sum(b["input_ids"].numel() for b in grouped_batches)
    seqs = 3 * n
    print(f"\nmodel {model_dir}; {args.threads} threads; {n} triplets of <= {args.max_length} tokens from {args.data}")
    print(f"{seqs} sequences, {tokens} tokens; padded random batches {padded} positions "
          f"({100 * (1 - tokens / padded):.0f} % padding), length-grouped {padded_grouped}")
    for name, share in (("padding_free", False), ("padding_free+share_prefix", True)):
        computed = sum(layout_of(b, share_prefix=share, padding_free=True).positions for b in random_batches)
        print(f"{name}: {computed} positions computed ({100 * computed / padded:.0f} % of the padded batches')")
    ref = seqs / sum(times["padded"])
    for name in paths:
        rate = seqs / sum(times[name])
        twin = "grouped" if paths[name][1] is grouped_batches else "padded"
        same = "" if paths[name][2] or name == twin or twin not in paths else (
            f"  loss = {twin}'s" if all(abs(a - b) <= 1e-4 * abs(b) for a, b in zip(losses[name], losses[twin]))
            else "  LOSS DIFFERS")
        print(f"{name:<42} {rate:6.3f} seq/s  {rate / ref:5.2f}x{same}")
    if "new" in paths:
        print(f"\nnew (share_prefix + padding_free + length-grouped) / old (padded random batches): "
              f"{sum(times['padded']) / sum(times['new']):.2f}x sequences per second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
