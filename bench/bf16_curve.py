"""bf16 autocast on CPU: does the loss curve stay within seed noise of fp32's?

usage: python bench/bf16_curve.py [--data FILE] [--model DIR] [--steps 12] [--batch-size 4] [--threads 2]

Three short training runs of the ``cpu`` preset's setting (SmolLM2, LoRA r16 on every layer, 4
triplets a step (``--batch-size``), learning rate 2e-4 with 4 warm-up steps, margin 0.2, answer-only logits, the
padding-free shared-prefix path), on triplets mined (random negatives) from ``--data`` (default:
the shipped dev split as a stand-in), each in its own process (a process has one accelerator
state): fp32 with seed 0, fp32 with seed 1, bf16 autocast with seed 0. All three draw the same
batches (``data_seed`` 0); the seed changes the LoRA initialisation (A; B starts at zero). Prints
the per-step CE and triplet loss of each, and the mean and max absolute and the max relative
per-step difference of bf16 from fp32 (seed 0) beside those of fp32 seed 1 from fp32 seed 0: the
seed-to-seed noise of the same run. (The relative difference of the triplet term is taken against
max(|fp32|, 0.01): the hinge can be near zero.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "tasks" / "consistency" / "data" / "dev.jsonl"
ARMS = {"fp32 seed 0": (False, 0), "fp32 seed 1": (False, 1), "bf16 seed 0": (True, 0)}


def run_arm(args) -> None:
    import torch
    from transformers import AutoTokenizer, set_seed

    from consistbench.benchmark.embedded import convert_smollm2
    from consistbench.benchmark.schema import load_data
    from consistbench.reference_method.collator import CompletionCollator
    from consistbench.reference_method.consistency_config import ConsistencyConfig
    from consistbench.reference_method.consistency_trainer import ConsistencyTrainer
    from consistbench.reference_method.train import load_model, prepare_data
    from consistbench.reference_method.triplets import MiningConfig

    torch.set_num_threads(args.threads)
    bf16, seed = ARMS[args.arm]
    model_dir = args.model or str(convert_smollm2())
    tok = AutoTokenizer.from_pretrained(model_dir)
    items = prepare_data(load_data(args.data), "all", tok, mining=MiningConfig(negatives="random"),
                         max_length=384).items
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ConsistencyConfig(output_dir=tmp, use_cpu=True, report_to="none", disable_tqdm=True, save_strategy="no",
                                seed=seed, data_seed=0, bf16=bf16, max_steps=args.steps, learning_rate=2e-4,
                                warmup_steps=4, per_device_train_batch_size=args.batch_size, alpha=1.0, margin=0.2,
                                use_lora=True, lora_r=16, lora_alpha=32, answer_logits_only=True,
                                padding_free=True, share_prefix=True, log_grad_ratio=False, logging_steps=100)
        set_seed(seed)
        model = load_model(Path(model_dir), cfg)
        trainer = ConsistencyTrainer(model=model, args=cfg, train_dataset=items,
                                     data_collator=CompletionCollator(tok.pad_token_id), processing_class=tok)
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    Path(args.out).write_text(json.dumps({"history": trainer.loss_history, "wall_s": wall}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--model", default=None)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=4, help="triplets per step")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arm", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arm:
        run_arm(args)
        return 0
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arm in ARMS:
            out = Path(tmp) / "arm.json"
            cmd = [sys.executable, __file__, "--arm", arm, "--out", str(out), "--data", args.data,
                   "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--threads", str(args.threads)] + (["--model", args.model] if args.model else [])
            subprocess.run(cmd, check=True)
            runs[arm] = json.loads(out.read_text())
            print(f"{arm}: {args.steps} steps in {runs[arm]['wall_s']:.0f} s", flush=True)
    curves = {arm: {k: [h[k] for h in r["history"]] for k in ("ce", "triplet")} for arm, r in runs.items()}
    print(f"\n{'step':>4}  " + "  ".join(f"{arm + ' CE':>16} {'triplet':>8}" for arm in ARMS))
    for s in range(args.steps):
        print(f"{s:>4}  " + "  ".join(f"{curves[a]['ce'][s]:>16.5f} {curves[a]['triplet'][s]:>8.5f}" for a in ARMS))
    ref = curves["fp32 seed 0"]
    for key, floor in (("ce", 0.0), ("triplet", 0.01)):
        noise = [abs(a - b) for a, b in zip(curves["fp32 seed 1"][key], ref[key])]
        bf16 = [abs(a - b) for a, b in zip(curves["bf16 seed 0"][key], ref[key])]
        scale = [max(abs(b), floor) for b in ref[key]]
        print(f"{key}: |bf16 - fp32| mean {sum(bf16) / len(bf16):.5f}, max {max(bf16):.5f}, "
              f"max relative {max(d / s for d, s in zip(bf16, scale)):.4f}; "
              f"|fp32 seed 1 - fp32 seed 0| mean {sum(noise) / len(noise):.5f}, max {max(noise):.5f}, "
              f"max relative {max(d / s for d, s in zip(noise, scale)):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
