"""The weights stage's forward passes: the similarity matrices ``S`` of the base and of each model over
the dev queries (:mod:`consistbench.reference_method.consistency_weights`), in one process or several.

    accelerate launch --config_file ddp.yaml -m consistbench.reference_method.reproduce.similarities \\
        --base BASE --model M1 --model M2 --model M3 --options '{"max_queries": null, ...}' \\
        --device auto --dtype bfloat16 -o weights/similarities.npz

Under ``accelerate launch`` the models are dealt out to the processes (model ``i`` to process
``i mod N``; at most one process per model is busy), each process writes its models' matrices
to ``OUT.parts/`` and the main process assembles ``OUT`` once all are done. Each model's forward
passes are the same whichever process runs them, so the file holds the matrices one process
computes. A part already written is not computed again (a crashed run continues).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import atomic_path
from consistbench.reference_method.consistency_weights import (
    DEFAULT_DEV,
    Similarities,
    load_queries,
    model_similarities,
    queries_digest,
    reference_similarity,
)
from consistbench.reference_method.merge.checks import check_models
from consistbench.reference_method.merge.io import LazyModel
from consistbench.reference_method.merge.layout import assign, layout_for, num_layers
from consistbench.reference_method.weights_file import WeightsOptions, options_from


def resolve_device(device: str | None, local_rank: int = 0) -> str:
    """``None``/``cpu``: the CPU; ``auto``: this process's GPU when there is one, else the CPU."""
    if device in (None, "cpu"):
        return "cpu"
    if device == "auto":
        import torch

        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    return device


def collect(base: str | Path, models: list[str | Path], options: WeightsOptions, out: str | Path, *,
            dev: str | Path = DEFAULT_DEV, device: str | None = None, dtype: str = "float32",
            rank: int = 0, world: int = 1, local_rank: int = 0, barrier=None, log=print) -> Path:
    """Compute this process's share of the matrices and (main process) write ``out``."""
    out = Path(out)
    barrier = barrier or (lambda: None)
    ref = LazyModel(base, label=f"base ({Path(base).name})")
    check_models(ref, [LazyModel(m, label=Path(m).name) for m in models])
    layout = layout_for(ref.config, ref.label)  # the merge weighs tensors by layer: refuse what it cannot map
    assign(ref.tensors, layout, num_layers(ref.config, layout, ref.label), ref.label)
    queries = load_queries(dev, options.max_queries)
    parts = out.with_name(out.name + ".parts")
    where = resolve_device(device, local_rank)
    for i, path in enumerate([base, *models]):
        part = parts / f"{i}.npz"
        if i % world != rank or part.is_file():
            continue
        sims = model_similarities(path, queries, options, tokenizer_dir=base, device=where, dtype=dtype)
        with atomic_path(part) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **sims)
        log(f"[weights] process {rank}: {Path(path).name} on {where} ({dtype})")
    barrier()
    if rank == 0:
        mats = []
        for i in range(len(models) + 1):
            with np.load(parts / f"{i}.npz") as z:
                mats.append({k: z[k] for k in z.files})
        meta = {"dev": {"path": str(Path(dev).resolve()), "n_queries": len(queries), "sha256": queries_digest(queries)},
                "groups": [getattr(q, "group", "") for q in queries], "device": where, "dtype": dtype}
        Similarities(reference=reference_similarity(queries, options.encoder), base=mats[0], models=mats[1:],
                     num_layers=len(mats[0]) - 2, meta=meta).save(out)
        shutil.rmtree(parts, ignore_errors=True)
    barrier()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m consistbench.reference_method.reproduce.similarities",
                                description="Similarity matrices of a base and its fine-tunes on the dev queries.")
    p.add_argument("--base", required=True)
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--dev", default=str(DEFAULT_DEV))
    p.add_argument("--options", default="{}", help="WeightsOptions fields as JSON")
    p.add_argument("--device", default=None, help="cpu (default), auto (this process's GPU) or a torch device")
    p.add_argument("--dtype", default="float32")
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args(argv)
    try:
        options = options_from(**json.loads(args.options))
        from accelerate import PartialState

        cpu = resolve_device(args.device) == "cpu"  # join the processes over gloo, not a GPU backend
        state = PartialState(cpu=cpu)
        collect(args.base, args.model, options, args.output, dev=args.dev, device=args.device, dtype=args.dtype,
                rank=state.process_index, world=state.num_processes, local_rank=state.local_process_index,
                barrier=state.wait_for_everyone)
    except ConsistbenchError as exc:
        print(f"consistbench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
