"""Run a merge: check the inputs, stream every tensor through the method, write the folder.

Memory stays near one model's size whatever K is:

- inputs are memory-mapped safetensors opened with ``safe_open`` (at most two shards open per
  model) and taken one tensor at a time as zero-copy views of the mapping (file-backed pages,
  not anonymous memory); for *elementwise* methods (linear, task_arithmetic, consistency without
  sparsification) each tensor is merged and written in flat slices of ``chunk_elements``
  elements (default 2^18: the slices of K models stay in the CPU cache), so the anonymous
  working set is a few slices;
- random methods (DARE) are elementwise too, in fixed blocks of ``ops.RNG_BLOCK`` elements
  seeded one by one;
- methods with a tensor-wide step (TIES's top-k trimming) get whole tensors, so their working
  set is a few times K copies of the largest tensor (the embeddings, usually);
- the output is written straight to disk as it is produced (io.StreamingWriter).

The output goes to a temporary folder beside ``out_dir`` that is renamed at the end; a failed
or interrupted merge leaves nothing. A killed merge (SIGKILL, power loss) cannot clean up: its
``.OUT.*.tmp`` folder holds an owner marker (pid, host, command), and the next merge to the same
output removes it once that process is proven gone (:func:`~consistbench.benchmark.fileio.remove_stale_tmp`). An existing ``out_dir`` is replaced only if it is an
earlier merge's output (it holds ``merge_config.yaml``); an input folder never is. The folder holds the weights, the base's config and
tokenizer files, the resolved ``merge_config.yaml``, the consistency weights when used, and a
model card ``README.md``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path


from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import TMP_MARKER, atomic_path, mark_tmp_owner, remove_stale_tmp
from consistbench.reference_method.merge.card import write_card
from consistbench.reference_method.merge.config import MergeConfig
from consistbench.reference_method.merge.io import FLOAT_DTYPES, StreamingWriter, torch_dtype
from consistbench.reference_method.merge.ops import RNG_BLOCK, tensor_seed
from consistbench.reference_method.merge.plan import build_plan
from consistbench.reference_method.merge.registry import TensorInputs

# Files copied from the base (config and tokenizer); weights, READMEs and training state are not.
COPY_FROM_BASE = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt",
                  "tokenizer.model", "chat_template.jinja", "chat_template.json", "preprocessor_config.json")
OUT_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
MERGE_COMMAND = "consistbench merge"  # the owner marker's command: leftovers of merges only are removed


def _constant_weights(config: MergeConfig):
    w = [m.weight for m in config.models]
    return lambda _name: w


def merge(config: MergeConfig, out_dir: str | Path, *, log: Callable[[str], None] | None = None) -> dict:
    """Merge as ``config`` says into ``out_dir``; returns a summary (files, seconds, sizes).

    Raises ConsistbenchError for bad input before writing anything; on any failure no output
    folder is left.
    """
    import torch

    log = log or (lambda _m: None)
    t0 = time.perf_counter()
    spec = config.method_spec()
    params = config.method_params()
    check_out_dir(config, out_dir)
    plan = build_plan(config, needs_base=spec.needs_base, per_layer=spec.weights is not None)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        weights_for = spec.weights(config, params, plan) if spec.weights else _constant_weights(config)
        resolved = {}
        for name in plan.names:  # all weights known and finite before anything is written
            w = [float(x) for x in weights_for(name)]
            if len(w) != len(plan.models) or not all(math.isfinite(x) for x in w):
                raise ConsistbenchError(f"non-finite or missing merge weights for {name}: {w}")
            resolved[name] = torch.tensor(w, dtype=torch.float32)
        elementwise = spec.is_elementwise(params)
        random = spec.is_random(params)
        step = RNG_BLOCK if random else config.chunk_elements  # random methods: fixed, seeded blocks
        seed = int(getattr(params, "seed", 0) or 0)
        ref = plan.reference
        entries, out_dt = [], {}
        for name in plan.names:
            info = ref.tensors[name]
            dt = info.dtype if config.dtype == "auto" or info.dtype not in FLOAT_DTYPES else OUT_DTYPES[config.dtype]
            out_dt[name] = dt
            entries.append((name, dt, info.shape))
        log(f"{spec.name}: {len(plan.models)} models, {len(plan.names)} tensors, "
            f"{plan.model_bytes / 1e6:.0f} MB per model; checks {time.perf_counter() - t0:.1f}s")
        out_dir = Path(out_dir)
        stale = remove_stale_tmp(out_dir, MERGE_COMMAND)  # a killed merge's leftovers, proven dead
        for folder, owner in stale:
            log(f"removed {folder}, left by an interrupted merge (pid {owner['pid']} on {owner['host']}, "
                "no longer running)")
        with atomic_path(out_dir, is_dir=True) as tmp:
            mark_tmp_owner(tmp, MERGE_COMMAND)
            writer = StreamingWriter(tmp, entries, config.shard_bytes,
                                     metadata={"merged_by": "consistbench", "merge_method": spec.name})
            try:
                for name in plan.names:
                    info = ref.tensors[name]
                    target = torch_dtype(out_dt[name])
                    if info.dtype not in FLOAT_DTYPES:  # integer buffers: the reference's values
                        writer.write(name, ref.get(name))
                        continue
                    compute = torch.float64 if info.dtype == "F64" else torch.float32
                    g = plan.group(name)
                    # zero-copy views of the memory-mapped inputs; only slices are materialised
                    base_t = plan.base.get(name) if plan.base is not None else None
                    model_ts = [m.get(name) for m in plan.models]
                    if elementwise:  # flat slices of at most chunk_elements, written in order
                        base_t = base_t.reshape(-1) if base_t is not None else None
                        model_ts = [t.reshape(-1) for t in model_ts]
                        n = info.numel
                        spans = [(a, min(n, a + step)) for a in range(0, n, step)]
                    else:
                        spans = [None]
                    for span in spans or [(0, 0)]:
                        inputs = TensorInputs(name=name, base=_part(base_t, span, compute),
                                              models=[_part(t, span, compute) for t in model_ts],
                                              weights=resolved[name].to(compute),
                                              seed=tensor_seed(seed, name, span[0] if span else 0),
                                              layer=g if isinstance(g, int) else None)
                        if not random:
                            out = spec.fn(inputs, params)
                        else:
                            with torch.random.fork_rng(devices=[]):
                                torch.manual_seed(inputs.seed)
                                out = spec.fn(inputs, params)
                        del inputs
                        if not math.isfinite(float(out.sum())):  # any NaN/inf in the slice makes the sum non-finite
                            raise ConsistbenchError(f"merged tensor {name} has non-finite values "
                                                    "(an input holds NaN/inf, or a weight overflows)")
                        writer.write(name, out.to(target))
                        del out
                    del base_t, model_ts
                files = writer.close()
            except BaseException:
                writer.abort()
                raise
            _copy_base_files(ref.path, tmp, config.dtype)
            (tmp / "merge_config.yaml").write_text(config.to_yaml(), encoding="utf-8")
            extra = {}
            wfile = getattr(params, "weights_file", None)
            if wfile:
                shutil.copyfile(wfile, tmp / "consistency_weights.json")
                extra["weights_file"] = "consistency_weights.json"
            seconds = time.perf_counter() - t0
            summary = {"out_dir": str(out_dir), "method": spec.name, "files": files, "seconds": round(seconds, 3),
                       "model_bytes": plan.model_bytes, "output_bytes": writer.total_size, "tensors": len(plan.names),
                       "elementwise": elementwise, "random": random, **extra}
            write_card(tmp, config, params, plan, summary)
            if stale:
                summary["removed_stale"] = [str(folder) for folder, _ in stale]
            (tmp / TMP_MARKER).unlink()
        log(f"wrote {out_dir} ({len(files)} shard{'s' if len(files) > 1 else ''}, "
            f"{writer.total_size / 1e6:.0f} MB) in {seconds:.1f}s")
        return summary
    finally:
        torch.set_num_threads(threads)
        plan.close()


def check_out_dir(config: MergeConfig, out_dir: str | Path) -> None:
    """The output may replace an earlier merge's folder, never an input or an unrelated folder."""
    out = Path(out_dir).resolve()
    for p in [config.base, *[m.path for m in config.models]]:
        if p is None:
            continue
        src = Path(p).resolve()
        if out == src or out in src.parents:
            raise ConsistbenchError(f"output folder {out_dir} is or contains the input {p}")
    if out.exists():
        if not out.is_dir():
            raise ConsistbenchError(f"output {out_dir} exists and is not a folder")
        if any(out.iterdir()) and not (out / "merge_config.yaml").is_file():
            raise ConsistbenchError(f"output folder {out_dir} exists and is not an earlier merge's output "
                                    "(no merge_config.yaml): remove it or choose another")


def _part(t, span: tuple[int, int] | None, dtype):
    """A slice ``[start, stop)`` of a flat view (or the whole tensor) in the compute dtype."""
    if t is None:
        return None
    return (t if span is None else t[span[0]:span[1]]).to(dtype)


def _copy_base_files(src: Path, dst: Path, dtype: str) -> None:
    for fname in COPY_FROM_BASE:
        if (src / fname).is_file():
            shutil.copyfile(src / fname, dst / fname)
    cfg_path = dst / "config.json"
    if dtype != "auto" and cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        for key in ("dtype", "torch_dtype"):
            if key in cfg:
                cfg[key] = dtype
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
