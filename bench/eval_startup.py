"""Time to first generation: ``consistbench eval`` against the plain ``lm_eval`` CLI.

Both run the same task (``consistency_mini``) on the same model in a fresh Python process; the
child stops the moment the model's ``generate_until`` is first called, so the figure is the
start-up cost users wait through (imports, task indexing, data loading and checks, model load),
not generation speed. Runs alternate between the two commands and the medians are compared.

    python bench/eval_startup.py [--model DIR] [--repeats 3]

Prints both medians and the ratio consistbench / lm_eval (target: at most 0.5).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "FIRST_GENERATION"

CHILD = r"""
import os, sys
import lm_eval.models.huggingface as hf

def _stop(self, *args, **kwargs):
    print("%s", flush=True)
    os._exit(0)

hf.HFLM.generate_until = _stop
which, model = sys.argv[1], sys.argv[2]
if which == "lm_eval":
    from lm_eval.__main__ import cli_evaluate
    sys.argv = ["lm_eval", "--model", "hf", "--model_args", f"pretrained={model},dtype=float32",
                "--include_path", %r, "--tasks", "consistency_mini", "--device", "cpu",
                "--batch_size", "8", "--output_path", os.environ["BENCH_OUT"]]
    cli_evaluate()
else:
    from consistbench.benchmark.cli import main
    main(["eval", "--model-args", f"pretrained={model},dtype=float32", "-o", os.environ["BENCH_OUT"],
          "--chat-template", "no"])
print("no generation happened", file=sys.stderr)
sys.exit(1)
""" % (MARK, str(ROOT / "tasks"))


def time_one(which: str, model: str, out: Path) -> float:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", BENCH_OUT=str(out))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, which, model], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.strip() == MARK:
            elapsed = time.perf_counter() - t0
            proc.wait()
            return elapsed
    proc.wait()
    raise SystemExit(f"{which}: the child exited ({proc.returncode}) without reaching generation")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the embedded SmolLM2)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.model is None:
        from consistbench.benchmark.embedded import convert_smollm2

        args.model = str(convert_smollm2())
    import tempfile

    times: dict[str, list[float]] = {"consistbench": [], "lm_eval": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for which in (("consistbench", "lm_eval") if i % 2 == 0 else ("lm_eval", "consistbench")):
                t = time_one(which, args.model, Path(tmp) / f"{which}{i}")
                times[which].append(t)
                print(f"  run {i + 1} {which:12s} {t:6.2f} s", flush=True)
    cb, le = statistics.median(times["consistbench"]), statistics.median(times["lm_eval"])
    print(f"time to first generation (median of {args.repeats}): consistbench eval {cb:.2f} s, lm_eval CLI {le:.2f} s")
    print(f"ratio consistbench / lm_eval: {cb / le:.2f} (target <= 0.5)")


if __name__ == "__main__":
    main()
