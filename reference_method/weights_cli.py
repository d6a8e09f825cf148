"""``consistbench ref weights``: per-layer, per-model consistency weights for the merge."""

from __future__ import annotations

import argparse
from pathlib import Path

from consistbench.benchmark.cli import add_output_option
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.consistency_weights import DEFAULT_DEV, compute_weights, write_weights
from consistbench.reference_method.weights_chart import plot_distances
from consistbench.reference_method.weights_file import DISTANCE_KINDS, NORMS, options_from


def _two_kinds(text: str) -> tuple[str, str]:
    kinds = [k.strip() for k in text.split(",")]
    if len(kinds) != 2 or any(k not in DISTANCE_KINDS for k in kinds):
        raise ConsistbenchError(f"--distances-chart: two of {', '.join(DISTANCE_KINDS)} separated by a comma, "
                                f"got {text!r}")
    return kinds[0], kinds[1]


def cmd_weights(args: argparse.Namespace) -> int:
    opts = {k: getattr(args, k) for k in ("pooling", "distance", "norm", "compare", "normalisation", "temperature",
                                          "temperature_scale", "power", "total", "batch_size", "encoder")
            if getattr(args, k) is not None}
    if args.max_queries is not None:
        opts["max_queries"] = args.max_queries or None
    if args.no_chat_template:
        opts["chat_template"] = False
    options = options_from(**opts)
    kinds = _two_kinds(args.distances_chart) if args.distances_chart else None
    doc = compute_weights(args.base, args.models, args.dev, options, labels=args.labels,
                          similarities_out=args.save_similarities, similarities_in=args.from_similarities,
                          log=print, threads=args.threads)
    missing = [k for k in kinds or () if k not in doc["all_distances"]]
    if missing:  # before anything is written
        raise ConsistbenchError(f"--distances-chart: no {missing[0]} distance for these dev queries (no groups known)")
    heatmap = None if args.no_heatmap else (args.heatmap or Path(args.output).with_suffix(".png"))
    json_path, png = write_weights(doc, args.output, heatmap)
    print(f"wrote {json_path}" + (f" and {png}" if png else ""))
    if kinds:
        chart = plot_distances(doc, Path(args.output).with_name(Path(args.output).stem + "_distances.png"), kinds)
        print(f"wrote {chart}")
    w = doc["weights"]
    mean = [sum(col) / len(w["layers"]) for col in zip(*w["layers"])] if w["layers"] else w["embed"]
    for m, x in zip(doc["models"], mean):
        print(f"  {m['label']}: mean layer weight {x:.4f}")
    return 0


def register(ref_sub: argparse._SubParsersAction) -> None:
    p = ref_sub.add_parser("weights", help="consistency-aware per-layer merge weights from dev-set activations",
                           description="Compute w_k^l for `consistbench merge` (method: consistency). "
                                       "Defaults are documented in reference_method/consistency_weights.py "
                                       "and docs/MERGING.md.")
    p.add_argument("--base", required=True, help="base model folder")
    p.add_argument("--models", nargs="+", required=True, help="fine-tuned model folders (same architecture)")
    p.add_argument("--labels", nargs="+", help="names of the models in the JSON and heatmap (default: folder names)")
    p.add_argument("--dev", default=str(DEFAULT_DEV), help="dev JSONL with question and context (default: shipped dev)")
    add_output_option(p, help="weights JSON to write")
    p.add_argument("--heatmap", help="heatmap PNG (default: the output with .png)")
    p.add_argument("--no-heatmap", action="store_true")
    p.add_argument("--pooling", choices=("mean", "last"), help="pool query tokens (default mean)")
    p.add_argument("--distance", choices=DISTANCE_KINDS,
                   help="what is compared: paper (default: S_k against S_r entrywise), centered (double-centred and scaled), "
                        "cka (1 - linear CKA), within_group (same-group query pairs only)")
    p.add_argument("--norm", choices=NORMS, help="how paper/centered/within_group summarise the differences "
                                                 "(default mean_abs)")
    p.add_argument("--distances-chart", metavar="KIND,KIND",
                   help="also draw the per-layer distances of two kinds side by side (OUTPUT_distances.png)")
    p.add_argument("--compare", choices=("raw", "delta"), help="default raw")
    p.add_argument("--normalisation", choices=("softmax", "inverse_power"), help="default softmax")
    p.add_argument("--temperature", type=float, help="softmax temperature (default 0.05)")
    p.add_argument("--temperature-scale", choices=("base", "absolute"),
                   help="temperature in units of the base's distance (default) or absolute")
    p.add_argument("--power", type=float, help="inverse_power exponent (default 2)")
    p.add_argument("--total", type=float, help="per-layer sum of the weights (default 1)")
    p.add_argument("--batch-size", type=int, help="dev queries per forward pass (default 8)")
    p.add_argument("--max-queries", type=int, help="dev queries used, whole groups (default 256; 0: all)")
    p.add_argument("--no-chat-template", action="store_true", help="use the bare prompt, not the chat template")
    p.add_argument("--encoder", help="sentence encoder for S_r (default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--threads", type=int, help="torch threads for the forward passes (default: torch's choice)")
    p.add_argument("--save-similarities", metavar="NPZ", help="also save every S matrix (to re-weight later)")
    p.add_argument("--from-similarities", metavar="NPZ", help="reuse saved S matrices instead of running models")
    p.set_defaults(func=cmd_weights)
