"""Agreement of the generation backends: identical answers and metric differences against lm-eval's HF model.

    python bench/eval_agreement.py [--task consistency_mini] [--runs hf:1,hf:8,default:8,fast:8]

Runs ``consistbench eval`` (Python API, generation cache off) once per ``backend:batch`` on the
task and compares every run with the first one: the share of rows whose answer is identical,
and each overall metric's difference beside the first run's group-bootstrap standard error.
The bar for the default backend: its identical share against ``hf:1`` at least the share of
``hf:8`` against ``hf:1`` (lm-eval's HF model against itself at another batch size), and every
metric within one standard error. Also prints each run's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
METRICS = ("rougeL", "bleu", "em", "rs", "bs")


def run(backend: str, batch: int, task: str, out: Path, model_args: str | None) -> tuple[dict, dict, float]:
    from consistbench.benchmark.evaluate import EvalOptions, is_samples_file, run_eval

    t0 = time.perf_counter()
    res = run_eval(EvalOptions(backend=backend, model_args=model_args, tasks=(task,), output_path=str(out),
                               batch_size=batch, generation_cache=False))
    wall = time.perf_counter() - t0
    samples = next(p for p in sorted(out.rglob(f"samples_{task}_*.jsonl")) if is_samples_file(p.name, task))
    answers = {s["doc_id"]: s["resps"][0][0] for s in map(json.loads, open(samples))}
    return res["results"], answers, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="consistency_mini")
    ap.add_argument("--runs", default="hf:1,hf:8,default:8,fast:8", help="backend:batch, the first is the reference")
    ap.add_argument("--model-args", default=None, help="default: the embedded SmolLM2, float32")
    ap.add_argument("-o", "--output", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--from-json", nargs="+", default=None, metavar="FILE",
                    help="compare runs saved by earlier --json outputs instead of running (runs taken in --runs order)")
    args = ap.parse_args()
    root = Path(args.output or tempfile.mkdtemp(prefix="consistbench-agree-"))
    runs = [(r.split(":")[0], int(r.split(":")[1]) if ":" in r else 8) for r in args.runs.split(",") if r.strip()]
    got = {}
    if args.from_json:
        saved = {}
        for f in args.from_json:
            for name, g in json.loads(Path(f).read_text()).items():
                g["answers"] = {int(k): v for k, v in g["answers"].items()}
                saved[name] = g
        got = {f"{b}:{n}": saved[f"{b}:{n}"] for b, n in runs}
        runs = []
    for backend, batch in runs:
        name = f"{backend}:{batch}"
        results, answers, wall = run(backend, batch, args.task, root / name.replace(":", "-b"), args.model_args)
        r = results["results"][args.task]
        got[name] = {"answers": answers, "wall_s": round(wall, 1),
                     "metrics": {m: r[f"{m},none"] for m in METRICS},
                     "stderr": {m: r.get(f"{m}_stderr,none") for m in METRICS}}
        print(f"{name:10s} wall {wall:7.1f} s  " + "  ".join(f"{m} {got[name]['metrics'][m]:.4f}" for m in METRICS),
              flush=True)
    ref = f"{runs[0][0]}:{runs[0][1]}"
    print(f"\nagainst {ref} ({len(got[ref]['answers'])} rows):")
    for name, g in got.items():
        same = sum(g["answers"][k] == v for k, v in got[ref]["answers"].items()) / len(got[ref]["answers"])
        g["identical_share"] = round(same, 4)
        diffs = {m: g["metrics"][m] - got[ref]["metrics"][m] for m in METRICS}
        g["diff"] = diffs
        within = all(abs(diffs[m]) <= (got[ref]["stderr"][m] or 0) for m in METRICS)
        g["all_within_stderr"] = within
        print(f"{name:10s} identical {same:.3f}  " + "  ".join(
            f"{m} {diffs[m]:+.4f} (se {got[ref]['stderr'][m]:.4f})" for m in METRICS) + f"  within: {within}")
    if args.json:
        Path(args.json).write_text(json.dumps(got, indent=1))


if __name__ == "__main__":
    main()
