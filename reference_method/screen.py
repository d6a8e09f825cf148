"""The step-0 screen: how active the triplet term is for a model, data and settings, without training.

A triplet term whose margin every triplet already meets, or whose gradient is a small fraction of
the CE's, cannot change the model however long it trains. :func:`screen_triplets` measures, on N
batches of triplets drawn as training would draw them, what :class:`ConsistencyTrainer` records
at step 0 (``loss_history``): the share of active triplets (hinge > 0), the mean d(A,P) and
d(A,N), and the ratio of the triplet term's gradient norm (times alpha) to the CE's on the
trainable parameters; plus every triplet's two distances, so that a margin can be set from their
distribution (e.g. a quantile of d(A,N) - d(A,P)). It is how margin, pooling layer and pooled
positions are picked on dev before anything is trained.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.schema import load_data
from consistbench.reference_method.collator import CompletionCollator
from consistbench.reference_method.doctor import load_tokenizer
from consistbench.reference_method.train import load_model, prepare_data
from consistbench.reference_method.triplets import MiningConfig

if TYPE_CHECKING:
    from consistbench.reference_method.consistency_config import ConsistencyConfig

MEASURES = ("ce", "triplet", "active", "d_ap", "d_an", "grad_ratio")


def screen_triplets(model_dir: str | Path, data: str | Path, variant_type: str, config: ConsistencyConfig,
                    mining: MiningConfig | None = None, *, batches: int = 8, seed: int | None = None,
                    model=None, tokenizer=None, log: Callable[[str], None] = print) -> dict:
    """Measure the triplet term at step 0 on ``batches`` batches of ``config.per_device_train_batch_size``
    triplets of ``variant_type`` from ``data`` (a synthetic set), drawn at random with ``seed``
    (default ``config.seed``).

    ``model`` / ``tokenizer``: already loaded ones (e.g. to screen several settings of one model);
    by default the model is loaded as training would load it (``config``'s dtype and LoRA) with
    ``config.seed``. The loss settings (alpha, margin, distance, pooling_layer, pooling,
    pooled_positions) and the mining settings are ``config``'s and ``mining``'s.

    Returns ``{"batches", "triplets", "mean": {ce, triplet, active, d_ap, d_an, grad_ratio},
    "per_batch": [...], "per_triplet": {"d_ap": [...], "d_an": [...]}, "settings": {...}}``.
    """
    import torch
    from transformers import set_seed

    from consistbench.reference_method.consistency_trainer import ConsistencyTrainer

    if config.alpha <= 0:
        raise ConsistbenchError("the screen measures the triplet term: alpha must be > 0")
    if batches < 1:
        raise ConsistbenchError(f"batches must be at least 1, got {batches}")
    mining = mining or MiningConfig()
    model_dir = Path(model_dir)
    tokenizer = tokenizer or load_tokenizer(model_dir, trust_remote_code=config.trust_remote_code)
    if tokenizer.pad_token_id is None:
        raise ConsistbenchError(f"{model_dir}: the tokenizer has no pad token")
    prepared = prepare_data(load_data(data), variant_type, tokenizer, mining=mining, max_length=config.max_length,
                            source=str(data), question_only=config.pooled_positions == "question_only")
    size = config.per_device_train_batch_size
    wanted = batches * size
    if len(prepared.items) < wanted:
        log(f"screen: {len(prepared.items)} triplets, fewer than {batches} x {size}; using all of them")
    drawn = random.Random(config.seed if seed is None else seed).sample(prepared.items, min(wanted, len(prepared.items)))
    if model is None:
        set_seed(config.seed)
        model = load_model(model_dir, config)
    trainer = ConsistencyTrainer(model=model, args=config, data_collator=CompletionCollator(tokenizer.pad_token_id),
                                 processing_class=tokenizer)
    collate = CompletionCollator(tokenizer.pad_token_id)
    per_batch, d_ap, d_an = [], [], []
    device = trainer.args.device
    for start in range(0, len(drawn), size):
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in collate(drawn[start:start + size]).items()}
        record = trainer.measure(trainer.model, batch)
        d_ap += record.pop("d_ap_each")
        d_an += record.pop("d_an_each")
        per_batch.append({k: record[k] for k in MEASURES})
    mean = {k: statistics.fmean(b[k] for b in per_batch if b[k] is not None)
            if any(b[k] is not None for b in per_batch) else None for k in MEASURES}
    log(f"screen {variant_type}: {len(drawn)} triplets, {100 * mean['active']:.0f} % active, d(A,P) {mean['d_ap']:.4f}, "
        f"d(A,N) {mean['d_an']:.4f}" + (f", gradient ratio {mean['grad_ratio']:.3f}" if mean["grad_ratio"] else ""))
    settings = {k: getattr(config, k) for k in ("alpha", "margin", "distance", "pooling_layer", "pooling",
                                                "pooled_positions", "per_device_train_batch_size", "seed")}
    return {"batches": len(per_batch), "triplets": len(drawn), "mean": mean, "per_batch": per_batch,
            "per_triplet": {"d_ap": d_ap, "d_an": d_an}, "settings": dict(settings, mining=mining.to_json())}
