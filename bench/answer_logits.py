"""Answer-only logits: one training step with the LM head over every position vs only over the
answer positions (``answer_logits_only``), same batch, same process; peak memory of each path in
its own child process.

usage: python bench/answer_logits.py [--data SYNTH.jsonl] [--model DIR] [--batch-size 4]
                                     [--repeats 3] [--max-length 384] [--full-finetune] [--no-memory]

Loads SmolLM2 (the embedded model by default) with the ``cpu`` preset's LoRA (rank 16 on every
linear layer; ``--full-finetune`` for all weights), builds one batch of ``--batch-size`` real
triplets drawn with a fixed seed (3 x batch-size sequences, padded by the trainer's collator),
and times a full training step (``ConsistencyTrainer.compute_loss`` with CE + triplet, backward,
AdamW) on each path, alternately after one warm-up each, compared by medians so that drift in
the machine's load hits both. It also checks that the two losses agree. Then, unless
``--no-memory``, it runs each path alone in a fresh child process (load, two steps) and reports
the resident memory before the steps and its peak during them (sampled every 5 ms). Prints the
time ratio and the memory ratios.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PATHS = {"all positions": False, "answer positions": True}


def setup(args):
    import torch
    from transformers import AutoTokenizer

    from consistbench.benchmark.embedded import convert_smollm2
    from consistbench.reference_method.collator import CompletionCollator
    from consistbench.reference_method.consistency_config import ConsistencyConfig
    from consistbench.reference_method.train import load_model, prepare_data
    from consistbench.reference_method.triplets import MiningConfig

    model_dir = args.model or str(convert_smollm2())
    tok = AutoTokenizer.from_pretrained(model_dir)
    from triplet_overhead import bench_rows

    rows = bench_rows(args.data)
    prepared = prepare_data(rows, "all", tok, mining=MiningConfig(), max_length=args.max_length)
    if len(prepared.items) < args.batch_size:
        raise SystemExit(f"only {len(prepared.items)} triplets of at most {args.max_length} tokens")
    items = random.Random(0).sample(prepared.items, args.batch_size)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    batch = CompletionCollator(pad)(items)

    def cfg(answer_only: bool) -> ConsistencyConfig:
        return ConsistencyConfig(output_dir="/tmp/consistbench-bench-unused", alpha=1.0, use_cpu=True,
                                 report_to="none", disable_tqdm=True, use_lora=not args.full_finetune,
                                 lora_r=16, lora_alpha=32, answer_logits_only=answer_only)

    torch.manual_seed(0)
    model = load_model(Path(model_dir), cfg(False))
    model.train()
    return model_dir, model, batch, cfg


def make_step(model, batch, trainer):
    import torch

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)  # weights stay put

    def step() -> tuple[float, float]:
        start = time.perf_counter()
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start, loss.item()

    return step


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args) -> int:
    """One path alone: load, then two steps while a thread samples the resident memory every 5 ms;
    prints the resident memory before the steps and the highest sample (loading the model and
    mining the triplets peak on their own, so the process's high-water mark would hide the step)."""
    import gc
    import threading

    from consistbench.reference_method.consistency_trainer import ConsistencyTrainer

    _, model, batch, cfg = setup(args)
    step = make_step(model, batch, ConsistencyTrainer(model=model, args=cfg(PATHS[args.child])))
    gc.collect()
    before = peak = rss_bytes()
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.wait(0.005):
            peak = max(peak, rss_bytes())

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    for _ in range(2):
        step()
    done.set()
    t.join()
    print(f"RSS {before} {peak}", flush=True)
    return 0


def step_memory_gib(args, path: str) -> tuple[float, float]:
    """(resident memory before the steps, peak during them) of ``path`` alone in a fresh process."""
    cmd = [sys.executable, __file__, "--child", path, "--batch-size", str(args.batch_size),
           "--max-length", str(args.max_length)]
    cmd += (["--data", args.data] if args.data else []) + (["--model", args.model] if args.model else [])
    cmd += ["--full-finetune"] if args.full_finetune else []
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    before, peak = next(line for line in out.splitlines() if line.startswith("RSS ")).split()[1:]
    return int(before) / 2**30, int(peak) / 2**30


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="synthetic data (default: two train questions, made-up variants)")
    ap.add_argument("--model", default=None, help="model directory (default: the embedded SmolLM2)")
    ap.add_argument("--batch-size", type=int, default=4, help="triplets per step (3 sequences each; cpu preset: 4)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=384)
    ap.add_argument("--full-finetune", action="store_true", help="all weights instead of LoRA")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    ap.add_argument("--child", choices=list(PATHS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    import torch

    from consistbench.reference_method.consistency_trainer import ConsistencyTrainer

    model_dir, model, batch, cfg = setup(args)
    steps = {name: make_step(model, batch, ConsistencyTrainer(model=model, args=cfg(flag)))
             for name, flag in PATHS.items()}
    times: dict[str, list[float]] = {k: [] for k in steps}
    losses: dict[str, float] = {}
    for name, step in steps.items():
        _, losses[name] = step()  # warm-up (and the loss of the unchanged weights)
    for _ in range(args.repeats):
        for name, step in steps.items():
            times[name].append(step()[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    labels = batch["labels"][:, 1:]
    n_tok, n_pos = int(batch["attention_mask"].sum()), labels.numel()
    n_ans = int((labels != -100).sum())
    print(f"model {model_dir} ({'full fine-tuning' if args.full_finetune else 'LoRA r16, every linear layer'})")
    print(f"batch: {args.batch_size} triplet(s) = {batch['input_ids'].shape[0]} sequences, {n_tok} tokens "
          f"(padded {tuple(batch['input_ids'].shape)}); answer positions {n_ans} of {n_pos} "
          f"({n_ans / n_pos:.1%}); threads {torch.get_num_threads()}")
    a, b = losses["all positions"], losses["answer positions"]
    print(f"loss: all positions {a:.6f}, answer positions {b:.6f} (|difference| {abs(a - b):.2e})")
    for k, v in times.items():
        print(f"{k:>16}: median {med[k]:.2f} s/step  (runs: {', '.join(f'{x:.2f}' for x in v)})")
    print(f"speed-up: {med['all positions'] / med['answer positions']:.3f}x")
    if not args.no_memory:
        del model, steps
        mem = {name: step_memory_gib(args, name) for name in PATHS}
        for k, (before, peak) in mem.items():
            print(f"{k:>16}: resident {before:.2f} GiB before the steps, peak {peak:.2f} GiB during them "
                  f"(+{peak - before:.2f} GiB; alone, fresh process)")
        grow = {k: peak - before for k, (before, peak) in mem.items()}
        print(f"memory: the step adds {grow['answer positions'] / grow['all positions']:.2f}x of the standard "
              f"path's; peak {mem['answer positions'][1] / mem['all positions'][1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
