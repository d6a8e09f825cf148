"""How often two backends give the same answer, from one run's samples and another run's cache.

A full-split run is long; when the second run was stopped part way (or only its generation
cache is wanted), its answers are still in ``OUT/.consistbench-cache/``. This script looks every
prompt of a finished run's samples file up in the other backend's cache (same key as
``consistbench eval``: model identity, prompt, generation settings) and prints, over the rows
both answered: how many answers are identical and the mean ROUGE-L F1 against the reference
of each side.

    python bench/cached_agreement.py out/full-fast/smollm2-135m-instruct/samples_consistency_*.jsonl \
        --cache-out out/full-default --cache-backend default
"""

from __future__ import annotations

import argparse
import hashlib
import json

from consistbench.benchmark.evaluate import EvalOptions, check_model_args, resolve_backend
from consistbench.benchmark.gencache import GenerationCache, model_identity, request_key
from consistbench.benchmark.metrics import rouge_l


def identity(backend: str, model_args: str | None) -> tuple[str, str]:
    """The generation cache's model identity and file digest, exactly as ``consistbench eval`` makes them."""
    opts = EvalOptions(backend=backend, model_args=model_args)
    name, args = resolve_backend(opts)
    args = check_model_args(name, args, False)
    ident = model_identity(name, args, extra=json.dumps({"batch_size": str(opts.batch_size), "device": str(opts.device)}))
    return ident, hashlib.sha256(ident.encode()).hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("samples", help="samples JSONL of the finished run")
    ap.add_argument("--cache-out", required=True, help="output folder of the other run (holds .consistbench-cache/)")
    ap.add_argument("--cache-backend", default="default", choices=("default", "fast", "hf"))
    ap.add_argument("--model-args", default=None, help="the other run's --model-args (default: the embedded model)")
    args = ap.parse_args()

    ident, digest = identity(args.cache_backend, args.model_args)
    cache = GenerationCache(f"{args.cache_out}/.consistbench-cache/generations-{digest}.jsonl", ident, readonly=True)
    n = same = 0
    r_run, r_cache = [], []
    with open(args.samples, encoding="utf-8") as fh:
        for line in fh:
            s = json.loads(line)
            gen = s["arguments"]["gen_args_0"]
            other = cache.get(gen["arg_0"], gen["arg_1"])
            if other is None:
                continue
            mine = s["resps"][0][0]
            n += 1
            same += other.strip() == mine.strip()
            r_run.append(rouge_l(mine, s["doc"]["reference"]))
            r_cache.append(rouge_l(other, s["doc"]["reference"]))
    if not n:
        raise SystemExit("no prompt of the samples file is in that cache (other model, settings or data?)")
    print(json.dumps({"rows_compared": n, "cached_rows": len(cache.entries), "identical": same,
                      "identical_share": round(same / n, 4), "rougeL_samples_run": round(sum(r_run) / n, 4),
                      f"rougeL_{args.cache_backend}_cache": round(sum(r_cache) / n, 4)}))


if __name__ == "__main__":
    main()
