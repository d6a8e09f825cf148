"""Merging K=3 SmolLM2-sized models: peak anonymous memory and wall time, ours and mergekit's.

usage: python bench/merge_memory.py [--repeats 3] [--methods task_arithmetic consistency]
                                    [--no-mergekit] [--chunk-elements N] [--mergekit-threads 1]
                                    [--json OUT.json]

Inputs (built once in the cache, never in the repo): the embedded SmolLM2-135M-Instruct
converted to float32 safetensors (538 MB) as the base, and three "fine-tunes" made from it by
adding seeded Gaussian noise (std 1 % of each tensor's std), saved with safetensors. The
consistency merge uses a seeded random per-layer weights file (the weights' values do not
change the merge's cost).

Each measurement runs in a fresh child process. The child imports everything first (start-up
is excluded), reads every input file once to warm the page cache, then, in the same process:

1. *copy*: reads every input weight file once (16 MB buffer) and writes one output file of
   the merged model's size: the time of just moving the bytes;
2. *merge*: ``consistbench.reference_method.merge.merge`` (checks included) or mergekit's ``run_merge``
   (in-process, ``MergeOptions(write_model_card=False)``) on the same inputs, exported from the
   same config with ``export_mergekit``. Both run torch with one intra-op thread (ours by its
   config default; mergekit via ``torch.set_num_threads``): on this shared 2-core machine two
   OpenMP threads made small tensor ops 1000x slower (docs/PERFORMANCE.md).

The parent samples ``/proc/CHILD/status`` every 2 ms and records, per phase, the peak
``RssAnon`` (judged; docs/PERFORMANCE.md, "How memory is measured") and the peak ``VmRSS`` (reported beside: it also
counts the memory-mapped input pages the kernel can drop). Targets: peak ``RssAnon``
<= 1.5x one model's size; merge time <= 2x the copy time. Per tool and method: the median of
the per-run ratios merge/copy (both timed in the same process, moments apart, so the machine's
load affects both alike), the best times, and the largest peak over ``repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NOISE = {"ft1": 1, "ft2": 2, "ft3": 3}      # name: seed
NOISE_REL_STD = 0.01
BUF = 16 * 2**20


def bench_dir() -> Path:
    from consistbench.benchmark.paths import cache_dir

    d = cache_dir() / "bench" / "merge"
    d.mkdir(parents=True, exist_ok=True)
    return d


# ---------------------------------------------------------------------------------------------
# inputs

def prepare() -> dict:
    """Base + 3 noisy fine-tunes + a weights file + merge configs, built once in the cache."""
    import shutil

    from consistbench.benchmark.embedded import convert_smollm2

    base = convert_smollm2()
    root = bench_dir()
    paths = {"base": base}
    for name, seed in NOISE.items():
        out = root / name
        paths[name] = out
        if (out / ".complete").is_file():
            continue
        import torch
        from safetensors import safe_open
        from safetensors.torch import save_file

        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        g = torch.Generator().manual_seed(seed)
        tensors = {}
        with safe_open(str(base / "model.safetensors"), "pt") as f:
            for key in sorted(f.keys()):
                t = f.get_tensor(key)
                tensors[key] = t + NOISE_REL_STD * float(t.float().std()) * torch.randn(t.shape, generator=g)
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
        del tensors
        for f in base.iterdir():
            if f.is_file() and not f.name.endswith(".safetensors"):
                shutil.copyfile(f, out / f.name)
        (out / ".complete").write_text("ok\n")
    models = [str(paths[n]) for n in NOISE]
    weights = root / "weights.json"
    if not weights.is_file():
        import random

        from consistbench.reference_method.weights_file import FORMAT, FORMAT_VERSION

        n_layers = json.loads((base / "config.json").read_text())["num_hidden_layers"]
        rng = random.Random(0)

        def row():
            x = [rng.random() + 0.2 for _ in models]
            return [v / sum(x) for v in x]

        doc = {"format": FORMAT, "version": FORMAT_VERSION, "num_layers": n_layers,
               "base": {"path": str(base), "label": "base"},
               "models": [{"path": str(Path(m).resolve()), "label": Path(m).name} for m in models],
               "dev": {"path": None, "n_queries": 0, "sha256": "synthetic weights for the benchmark"},
               "options": {}, "weights": {"embed": row(), "layers": [row() for _ in range(n_layers)], "final": row()}}
        weights.write_text(json.dumps(doc, indent=1))
    configs = {
        "task_arithmetic": {"method": "task_arithmetic", "base": str(base),
                            "models": [{"path": m, "weight": w} for m, w in zip(models, (0.5, 0.3, 0.2))]},
        "consistency": {"method": "consistency", "base": str(base), "models": models,
                        "parameters": {"weights_file": str(weights)}},
        # not part of the targets (whole-tensor methods), measured for docs/PERFORMANCE.md
        "dare_ties": {"method": "dare_ties", "base": str(base), "models": models,
                      "parameters": {"density": 0.5, "seed": 0}},
    }
    for name, cfg in configs.items():
        (root / f"{name}.json").write_text(json.dumps(cfg))
    return {"paths": {k: str(v) for k, v in paths.items()}, "configs": configs}


# ---------------------------------------------------------------------------------------------
# child: one tool, one method

def rss_anon_kb(pid: int | str = "self") -> tuple[int, int]:
    anon = rss = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                anon = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return anon, rss


def child(tool: str, method: str, chunk_elements: int | None, threads: int = 1) -> None:
    import ctypes
    import gc
    import shutil

    cfg_dict = json.loads((bench_dir() / f"{method}.json").read_text())
    if tool == "consistbench":
        import torch  # noqa: F401

        from consistbench.reference_method.merge import MergeConfig, merge
        from consistbench.reference_method.merge.ops import merge_utils
        from consistbench.reference_method.merge.catalog import get_method

        merge_utils(), get_method(method)  # imports done before timing
        cfg = MergeConfig.from_dict(cfg_dict)
        if chunk_elements:
            cfg = cfg.model_copy(update={"chunk_elements": chunk_elements})
    else:
        import yaml
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions

        from consistbench.reference_method.merge import MergeConfig, export_mergekit

        import torch

        mk = MergeConfiguration.model_validate(export_mergekit(MergeConfig.from_dict(cfg_dict)))
        yaml.safe_dump  # noqa: B018
        torch.set_num_threads(threads)  # the same as our merge's default (config `threads: 1`)
    inputs = [Path(cfg_dict["base"]) / "model.safetensors"] + [Path(m if isinstance(m, str) else m["path"]) /
                                                                "model.safetensors" for m in cfg_dict["models"]]
    out_size = inputs[0].stat().st_size
    buf = bytearray(BUF)
    for p in inputs:  # warm the page cache
        with open(p, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass
    out_dir = bench_dir() / f"out-{tool}-{method}"
    shutil.rmtree(out_dir, ignore_errors=True)
    copy_file = bench_dir() / f"copy-{tool}-{method}.bin"

    def mark(phase: str) -> None:
        print(f"PHASE {phase}", flush=True)
        time.sleep(0.05)  # let the parent see the marker before the phase's work starts

    mark("copy")
    t0 = time.perf_counter()
    written = 0
    with open(copy_file, "wb", buffering=0) as out:
        for p in inputs:
            with open(p, "rb", buffering=0) as fh:
                while n := fh.readinto(buf):
                    if written < out_size:
                        k = min(n, out_size - written)
                        out.write(memoryview(buf)[:k])
                        written += k
    copy_s = time.perf_counter() - t0
    copy_file.unlink()
    del buf
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    mark("idle")
    base_anon, _ = rss_anon_kb()
    mark("merge")
    t0 = time.perf_counter()
    if tool == "consistbench":
        merge(cfg, out_dir)
    else:
        run_merge(mk, str(out_dir), MergeOptions(write_model_card=False, quiet=True))
    merge_s = time.perf_counter() - t0
    mark("done")
    out_bytes = sum(f.stat().st_size for f in out_dir.glob("*.safetensors"))
    shutil.rmtree(out_dir, ignore_errors=True)
    print("RESULT " + json.dumps({"copy_s": copy_s, "merge_s": merge_s, "before_merge_anon_kb": base_anon,
                                  "output_bytes": out_bytes, "input_bytes": sum(p.stat().st_size for p in inputs)}),
          flush=True)


# ---------------------------------------------------------------------------------------------
# parent: run a child, sample its memory per phase

def measure(tool: str, method: str, chunk_elements: int | None, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", tool, method, "--mergekit-threads", str(threads)]
    if chunk_elements:
        cmd += ["--chunk-elements", str(chunk_elements)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
    phase = {"name": "start"}
    peaks: dict[str, list[int]] = {}
    result: dict = {}

    def reader():
        for line in proc.stdout:
            if line.startswith("PHASE "):
                phase["name"] = line.split()[1]
            elif line.startswith("RESULT "):
                result.update(json.loads(line[7:]))

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    while proc.poll() is None:
        try:
            anon, rss = rss_anon_kb(proc.pid)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            break
        p = peaks.setdefault(phase["name"], [0, 0])
        p[0], p[1] = max(p[0], anon), max(p[1], rss)
        time.sleep(0.002)
    th.join()
    if proc.wait() != 0 or not result:
        raise SystemExit(f"child {tool} {method} failed (exit {proc.returncode})")
    result["peak_anon_kb"] = {k: v[0] for k, v in peaks.items()}
    result["peak_rss_kb"] = {k: v[1] for k, v in peaks.items()}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", nargs="+", default=["task_arithmetic", "consistency"])
    ap.add_argument("--no-mergekit", action="store_true")
    ap.add_argument("--chunk-elements", type=int, default=None, help="override our merge's chunk_elements")
    ap.add_argument("--mergekit-threads", type=int, default=1,
                    help="torch threads for mergekit (default 1, as our merge; see docs/PERFORMANCE.md)")
    ap.add_argument("--json", help="write all runs here")
    ap.add_argument("--child", nargs=2, metavar=("TOOL", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.chunk_elements, args.mergekit_threads)
        return
    info = prepare()
    model_bytes = Path(info["paths"]["base"], "model.safetensors").stat().st_size
    tools = ["consistbench"] + ([] if args.no_mergekit else ["mergekit"])
    runs: dict[str, list[dict]] = {}
    for _ in range(args.repeats):
        for method in args.methods:
            for tool in tools:
                r = measure(tool, method, args.chunk_elements, args.mergekit_threads)
                runs.setdefault(f"{tool} {method}", []).append(r)
                print(f"  {tool:12s} {method:16s} merge {r['merge_s']:.2f}s  copy {r['copy_s']:.2f}s  "
                      f"peak RssAnon {r['peak_anon_kb'].get('merge', 0) / 1024:.0f} MiB", flush=True)
    mb = model_bytes / 2**20
    print(f"\none model: {model_bytes / 1e6:.0f} MB ({mb:.0f} MiB); K=3 fine-tunes + base; "
          f"best of {args.repeats}\n")
    print("merge / copy: median over runs of the ratio within one run (same process, same moment);\n"
          "peak RssAnon: the largest over runs; before: RssAnon of the idle process with everything imported\n")
    print("| tool | method | merge s (best) | copy s (best) | merge / copy | peak RssAnon MiB | / model | "
          "before merge MiB | peak VmRSS MiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    summary = []
    for key, rs in runs.items():
        tool, method = key.split()
        ratios = [r["merge_s"] / r["copy_s"] for r in rs]
        anon = max(r["peak_anon_kb"].get("merge", 0) for r in rs) / 1024
        rss = max(r["peak_rss_kb"].get("merge", 0) for r in rs) / 1024
        before = statistics.median(r["before_merge_anon_kb"] for r in rs) / 1024
        row = {"tool": tool, "method": method, "merge_s": min(r["merge_s"] for r in rs),
               "copy_s": min(r["copy_s"] for r in rs), "ratio": statistics.median(ratios),
               "peak_anon_mib": anon, "anon_over_model": anon / mb, "before_merge_anon_mib": before,
               "peak_rss_mib": rss, "ratios": [round(x, 3) for x in ratios],
               "merge_s_all": [round(r["merge_s"], 3) for r in rs], "copy_s_all": [round(r["copy_s"], 3) for r in rs],
               "peak_anon_mib_all": [round(r["peak_anon_kb"].get("merge", 0) / 1024) for r in rs]}
        summary.append(row)
        print(f"| {tool} | {method} | {row['merge_s']:.2f} | {row['copy_s']:.2f} | {row['ratio']:.2f}x | {anon:.0f} | "
              f"{row['anon_over_model']:.2f}x | {before:.0f} | {rss:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"model_bytes": model_bytes, "summary": summary, "runs": runs},
                                              indent=1))


if __name__ == "__main__":
    main()
