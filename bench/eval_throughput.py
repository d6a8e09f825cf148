"""Generation throughput: lm-eval's HF model (batch 8) against consistbench-hf's tiers, same rows, one process.

    python bench/eval_throughput.py [--groups 40] [--backends hf,default,fast] [--threads 2]
    python bench/eval_throughput.py --full fast      # a whole split through `consistbench eval` (default consistency_v1)

The rows are the first ``--groups`` whole groups of the test split of ``--data-version`` (default v1,
the data the figures in docs/PERFORMANCE.md were measured on) (every row of a group, so
prefix reuse gets what a real run gets), prompted exactly as ``consistbench eval`` prompts them
(lm-eval's chat template, the tasks' generation settings). Every backend answers the same
requests through its lm-eval ``generate_until`` with the models loaded before timing; the script
prints rows/s, the ratio to the HF model's rows/s, and the share of answers identical to the
first backend's. ``--full BACKEND`` instead runs ``consistbench eval --tasks TASK`` with
that backend (generation, scoring, files) and prints its wall time; add ``--no-generation-cache``
semantics by giving a fresh ``-o``.
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
ROOT = Path(__file__).resolve().parents[1]


def first_groups(n_groups: int, longest: bool = False, data_version: str = "v1") -> list[dict]:
    """The first ``n_groups`` whole groups of the test split (``longest``: the groups with the longest contexts)."""
    from consistbench.tasks.consistency.utils import load

    rows = load(subset="all", data_version=data_version)["test"].to_list()
    if longest:
        rows.sort(key=lambda r: -len(r["context"]))
    keep, out = [], []
    for r in rows:
        if r["group_id"] not in keep:
            if len(keep) == n_groups:
                continue
            keep.append(r["group_id"])
        out.append(r)
    return out


def task_gen_kwargs() -> dict:
    import yaml

    text = (ROOT / "tasks" / "consistency" / "_default_template_yaml").read_text()
    text = "\n".join(line for line in text.splitlines() if "!function" not in line)
    return dict(yaml.safe_load(text)["generation_kwargs"])


def make_lm(backend: str, model_dir: str, hf_batch: int, extra_args: str = ""):
    from lm_eval.api.registry import get_model

    import consistbench.benchmark.fastlm  # noqa: F401  (registers consistbench-hf)
    from consistbench.benchmark.evaluate import BACKENDS

    base, *more = backend.split("+")  # e.g. default+quantize=int8+decode_slots=64
    name, overrides = BACKENDS[base]
    args = {"pretrained": model_dir, "dtype": "float32", **overrides, **dict(m.split("=", 1) for m in more)}
    text = ",".join(f"{k}={v}" for k, v in args.items()) + (f",{extra_args}" if extra_args else "")
    return get_model(name).create_from_arg_string(text, {"batch_size": hf_batch, "device": "cpu"})


def requests_for(lm, rows: list[dict], gen_kwargs: dict):
    from lm_eval.api.instance import Instance

    from consistbench.benchmark.prompting import prompt_text

    out = []
    for i, r in enumerate(rows):
        text = prompt_text(r["context"], r["question"])
        if getattr(lm.tokenizer, "chat_template", None):  # as consistbench eval's --chat-template auto
            ctx = lm.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        else:
            ctx = text
        out.append(Instance(request_type="generate_until", doc=r, arguments=(ctx, dict(gen_kwargs)), idx=0,
                            metadata=("bench", i, 1)))
    return out


def run_full(args) -> None:
    out = args.output or tempfile.mkdtemp(prefix="consistbench-full-")
    cmd = [str(Path(sys.executable).parent / "consistbench"), "eval", "--tasks", args.task, "--backend", args.full,
           "-o", out]
    if args.model:
        cmd += ["--model-args", f"pretrained={args.model},dtype=float32"]
    print("running:", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"consistbench eval failed with status {proc.returncode}")
    res = sorted(Path(out).rglob("results_*.json"))[-1]
    cb = json.loads(res.read_text())["consistbench"]
    print(f"full split, backend {args.full}: wall {wall:.0f} s ({wall / 60:.1f} min) for the whole command; "
          f"generation cache {cb.get('generation_cache')}; results {res}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=40, help="first N whole groups of the test split (default 40)")
    ap.add_argument("--backends", default="hf,default,fast",
                    help="comma-separated, first one is the reference for identical answers (default hf,default,fast); "
                         "BACKEND+key=value adds model_args, e.g. default+quantize=int8, default+decode_slots=64")
    ap.add_argument("--hf-batch", type=int, default=8, help="lm-eval HF model's batch size (default 8)")
    ap.add_argument("--model", default=None, help="model folder (default: the embedded SmolLM2)")
    ap.add_argument("--longest", action="store_true",
                    help="the groups with the longest contexts instead of the first ones (sliding-window check)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--model-args-extra", default="", help="extra model_args for the consistbench-hf backends")
    ap.add_argument("--data-version", default="v1", help="the rows' data version (default v1; current: the shipped one)")
    ap.add_argument("--task", default="consistency_v1",
                    help="--full: the task to run (default consistency_v1, the 4,148-row split the figures in "
                         "docs/PERFORMANCE.md refer to; consistency is the current data version)")
    ap.add_argument("--full", default=None, metavar="BACKEND", help="run the full split with this backend instead")
    ap.add_argument("-o", "--output", default=None, help="--full: where consistbench eval writes (default: a temp dir)")
    ap.add_argument("--json", default=None, help="write the figures here as JSON")
    args = ap.parse_args()
    if args.full:
        return run_full(args)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model is None:
        from consistbench.benchmark.embedded import convert_smollm2

        args.model = str(convert_smollm2())
    rows = first_groups(args.groups, longest=args.longest, data_version=args.data_version)
    gen_kwargs = task_gen_kwargs()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    print(f"{len(rows)} rows ({args.groups} groups), torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    figures, answers = {}, {}
    for b in backends:
        lm = make_lm(b, args.model, args.hf_batch, args.model_args_extra if b != "hf" else "")
        reqs = requests_for(lm, rows, gen_kwargs)
        load0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        answers[b] = lm.generate_until(reqs)
        sec, cpu = time.perf_counter() - t0, time.process_time() - c0
        stats = getattr(lm, "last_stats", None)
        figures[b] = {"seconds": round(sec, 2), "rows_per_s": round(len(rows) / sec, 4),
                      "cpu_seconds": round(cpu, 2), "rows_per_cpu_s": round(len(rows) / cpu, 4),
                      "load_before": round(load0, 1), "load_after": round(os.getloadavg()[0], 1),
                      "stats": stats.__dict__ if stats is not None else None}
        print(f"  {b:10s} {sec:8.1f} s  {len(rows) / sec:6.3f} rows/s  cpu {cpu:8.1f} s  (load {load0:.1f} -> {os.getloadavg()[0]:.1f})"
              + (f"  prefill {stats.prefill_tokens}/{stats.prompt_tokens} prompt tokens, {stats.decode_steps} decode steps"
                 if stats else ""), flush=True)
        del lm
    ref = backends[0]
    print(f"\n{'backend':10s} {'rows/s':>8s} {'x ' + ref:>10s} {'rows/cpu-s':>11s} {'x ' + ref:>10s} "
          f"{'identical to ' + ref:>20s}")
    for b in backends:
        same = sum(a == r for a, r in zip(answers[b], answers[ref])) / len(rows)
        f = figures[b]
        f["ratio"] = round(f["rows_per_s"] / figures[ref]["rows_per_s"], 3)
        f["cpu_ratio"] = round(f["rows_per_cpu_s"] / figures[ref]["rows_per_cpu_s"], 3)
        f["identical_share"] = round(same, 4)
        print(f"{b:10s} {f['rows_per_s']:8.3f} {f['ratio']:10.2f} {f['rows_per_cpu_s']:11.3f} {f['cpu_ratio']:10.2f} "
              f"{same:20.3f}")
    print("(rows/cpu-s: rows per second of this process's CPU time; on a shared machine the ratio to trust with "
          "--threads 1, since wall time there depends on what else runs)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": len(rows), "groups": args.groups, "figures": figures,
                                               "answers": answers}, indent=1))


if __name__ == "__main__":
    main()
