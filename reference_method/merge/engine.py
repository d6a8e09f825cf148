"""Run a merge: check the inputs, stream every tensor through the method, write the folder.

Memory stays near one model's size whatever K is:

- inputs are memory-mapped safetensors read one tensor at a time (at most two shards open
  per model); for *elementwise* methods (linear, task_arithmetic, consistency without
  sparsification) a tensor larger than ``chunk_elements`` is read, merged and written in slices
  of rows, so the anonymous working set is about ``(3K + 3) * chunk_elements * 4`` bytes;
- methods with a tensor-wide step (TIES trimming, DARE's random masks) get whole tensors, so
  their working set is a few times K copies of the largest tensor (the embeddings, usually);
- the output is written straight to disk as it is produced (io.StreamingWriter).

The output goes to a temporary folder beside ``out_dir`` that is renamed at the end; a failed
or interrupted merge leaves nothing. The folder holds the weights, the base's config and
tokenizer files, the resolved ``merge_config.yaml``, the consistency weights when used, and a
model card ``README.md``.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from benchmark.errors import ConsistbenchError
from reference_method.merge.config import MergeConfig
from reference_method.merge.io import FLOAT_DTYPES, StreamingWriter, torch_dtype
from reference_method.merge.plan import build_plan, tensor_group

# Files copied from the base (config and tokenizer); weights, READMEs and training state are not.
COPY_FROM_BASE = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt",
                  "tokenizer.model", "chat_template.jinja", "chat_template.json", "preprocessor_config.json")
OUT_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


def _constant_weights(config: MergeConfig):
    w = [m.weight for m in config.models]
    return lambda _name: w


def _row_chunks(shape: tuple[int, ...], chunk_elements: int):
    if not shape:
        yield None
        return
    row = math.prod(shape[1:]) if len(shape) > 1 else 1
    rows = max(1, chunk_elements // max(row, 1))
    for start in range(0, shape[0], rows):
        yield (start, min(shape[0], start + rows))
    if shape[0] == 0:
        yield (0, 0)


def merge(config: MergeConfig, out_dir: str | Path, *, log: Callable[[str], None] | None = None) -> dict:
    """Merge as ``config`` says into ``out_dir``; returns a summary (files, seconds, sizes).

    Raises ConsistbenchError for bad input before writing anything; on any failure no output
    folder is left.
    """
    import torch

    from benchmark.fileio import atomic_path
    from reference_method.merge.card import write_card
    from reference_method.merge.registry import TensorInputs

    log = log or (lambda _m: None)
    t0 = time.perf_counter()
    spec = config.method_spec()
    params = config.method_params()
    plan = build_plan(config, needs_base=spec.needs_base)
    try:
        weights_for = spec.weights(config, params, plan) if spec.weights else _constant_weights(config)
        resolved = {}
        for name in plan.names:  # all weights known and finite before anything is written
            w = [float(x) for x in weights_for(name)]
            if len(w) != len(plan.models) or not all(math.isfinite(x) for x in w):
                raise ConsistbenchError(f"non-finite or missing merge weights for {name}: {w}")
            resolved[name] = torch.tensor(w, dtype=torch.float32)
        elementwise = spec.is_elementwise(params)
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
        with atomic_path(out_dir, is_dir=True) as tmp:
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
                    chunks = _row_chunks(info.shape, config.chunk_elements) if elementwise else [None]
                    g = tensor_group(name)
                    for rows in chunks:
                        base = plan.base.get(name, rows).to(compute) if plan.base is not None else None
                        models = [m.get(name, rows).to(compute) for m in plan.models]
                        inputs = TensorInputs(name=name, base=base, models=models, weights=resolved[name].to(compute),
                                              seed=_seed(seed, name), layer=g if isinstance(g, int) else None)
                        with torch.random.fork_rng(devices=[]):
                            torch.manual_seed(inputs.seed)
                            out = spec.fn(inputs, params)
                        del inputs, base, models
                        if not bool(torch.isfinite(out).all()):
                            raise ConsistbenchError(f"merged tensor {name} has non-finite values "
                                                    "(an input holds NaN/inf, or a weight overflows)")
                        writer.write(name, out.to(target))
                        del out
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
                       "elementwise": elementwise, **extra}
            write_card(tmp, config, params, plan, summary)
        log(f"wrote {out_dir} ({len(files)} shard{'s' if len(files) > 1 else ''}, "
            f"{writer.total_size / 1e6:.0f} MB) in {seconds:.1f}s")
        return summary
    finally:
        plan.close()


def _seed(seed: int, name: str) -> int:
    from reference_method.merge.ops import tensor_seed

    return tensor_seed(seed, name)


def _copy_base_files(src: Path, dst: Path, dtype: str) -> None:
    import json

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


def export_mergekit(config: MergeConfig, path: str | Path | None = None) -> dict:
    """The mergekit YAML mapping for ``config`` (written to ``path`` when given).

    linear, task_arithmetic and consistency (sparsify none) export exactly; ties, dare_ties,
    dare_linear and sparsified consistency export mergekit's nearest method (docs/MERGING.md
    lists the differences). ConsistbenchError for a method mergekit does not have.
    """
    import yaml

    spec = config.method_spec()
    params = config.method_params()
    if spec.mergekit is None:
        raise ConsistbenchError(f"merge method {spec.name!r} has no mergekit equivalent to export")
    plan = build_plan(config, needs_base=spec.needs_base, check=False)
    try:
        doc = spec.mergekit(config, params, plan)
    finally:
        plan.close()
    if path is not None:
        from benchmark.fileio import write_text

        exact = spec.name in ("linear", "task_arithmetic") or (spec.name == "consistency" and params.sparsify == "none")
        header = (f"# mergekit configuration exported by `consistbench merge --export-mergekit` ({spec.name}).\n"
                  + ("# Same formula as consistbench's merge.\n" if exact else
                     "# mergekit's nearest method: not bit-identical to consistbench's (see docs/MERGING.md).\n")
                  + "# Run: mergekit-yaml THIS.yaml OUT_DIR --no-write-model-card [--random-seed N]\n")
        write_text(path, header + yaml.safe_dump(doc, sort_keys=False))
    return doc
