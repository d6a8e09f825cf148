"""Settings of the SFT + triplet-loss trainer (:class:`ConsistencyTrainer`).

A dataclass extending :class:`transformers.TrainingArguments`, in the manner of TRL's
``<method>_config.py``: every field below is documented with its default and where the default
comes from. "Paper" is Peng et al., *Harmonizing Diverse Models: A Layer-wise Merging Strategy
for Consistent Generation*, EMNLP 2025 Industry (arXiv 2510.14915), which defines the loss
``L = L_CE + alpha * L_triplet`` with ``L_triplet = max(0, d(f(A), f(P)) - d(f(A), f(N)) + margin)``
over pooled hidden states of the query, but publishes no values for alpha, margin, the
distance, the layer or the pooling. Those defaults are this project's choices and say so.

Fields inherited from ``TrainingArguments`` keep their meaning; a few defaults are changed here
(``remove_unused_columns=False`` because batches carry a ``query_mask``, ``report_to="none"``,
one epoch, a learning rate for full fine-tuning of a small model). ``per_device_train_batch_size``
counts *triplets*: each is three sequences (anchor, positive, negative) in one forward pass.

A YAML file holding these fields is the same object written down: ``ConsistencyConfig(**yaml)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from transformers import TrainingArguments

from consistbench.reference_method.training_args import CheckpointArguments, LoraArguments, ModelArguments

Distance = Literal["cosine", "euclidean"]
Pooling = Literal["mean", "last", "max"]
Examples = Literal["triplets", "rows"]


@dataclass
class ConsistencyConfig(LoraArguments, ModelArguments, CheckpointArguments, TrainingArguments):
    r"""Configuration of :class:`consistbench.reference_method.consistency_trainer.ConsistencyTrainer`.

    Parameters (beyond ``TrainingArguments``):

    > Loss

    alpha (`float`, *optional*, defaults to `1.0`):
        Weight of the triplet term in ``L = L_CE + alpha * L_triplet`` (paper, eq. for the total
        loss; the paper gives no value: 1.0 weighs both terms equally). ``0`` is plain SFT, and
        then the loss is exactly the causal-LM cross-entropy ``transformers.Trainer`` computes.
    margin (`float`, *optional*, defaults to `0.2`):
        Triplet margin (paper's ``margin``; no value published). 0.2 in cosine distance, whose
        range is [0, 2]. With ``distance="euclidean"`` choose it on the scale of hidden-state norms.
    distance (`Literal["cosine", "euclidean"]`, *optional*, defaults to `"cosine"`):
        ``d`` in the triplet term: ``1 - cos(u, v)`` or ``||u - v||_2``. The paper leaves it
        open; cosine is scale-free, so one margin works across layers and models.
    pooling_layer (`int`, *optional*, defaults to `-1`):
        Index into the model's ``hidden_states`` (0 = embeddings, -1 = last layer) whose query
        tokens are pooled (this project's default: the last hidden layer). Any index the model has.
    pooling (`Literal["mean", "last", "max"]`, *optional*, defaults to `"mean"`):
        How the query tokens' states become one vector ``f(.)``: their mean (the default),
        the last query token, or an element-wise max.

    > Data

    max_length (`int`, *optional*, defaults to `1024`):
        Longest training sequence in tokens (prompt + answer + eos). Longer triplets are dropped
        and counted, never truncated: truncation would train on a prompt evaluation never shows.
        1024 covers every row of the shipped train split with SmolLM2's tokenizer.

    examples (`Literal["triplets", "rows"]`, *optional*, defaults to `"triplets"`):
        What one training example is: a mined triplet (three sequences, each with its answer, so
        CE covers all three), or one row of the data (originals and variants, each seen once per
        epoch): the paper's plain SFT baseline. ``rows`` needs ``alpha = 0``; ``triplets`` with
        ``alpha = 0`` is SFT on the triplet-expanded data, kept as an ablation.

    > Compute

    answer_logits_only (`bool`, *optional*, defaults to `False`):
        Run the LM head only at the positions whose next token is a label (the answer tokens),
        instead of over every position of the padded batch. The loss is the same cross-entropy
        (same reduction, same normalisation); what changes is the cost: on the RAG prompts of
        the benchmark about one position in ten is an answer token, so the ``hidden x vocab``
        matrix product and the ``batch x length x vocab`` logits (their softmax and gradient)
        shrink about tenfold. Used when the model's logits are its output embedding applied to
        the decoder's last hidden state, which is checked once on the first batch; any other
        model (logit soft-capping or scaling) and multi-process training keep the standard path,
        with a warning. Off by default so that a run's numerics match runs made before it
        existed (the two paths agree to float rounding, not bit for bit).

    > Model and LoRA (shared with the preference commands)

    ``trust_remote_code``, ``allow_pad_eq_eos`` (:class:`~consistbench.reference_method.training_args.ModelArguments`)
    and ``use_lora``, ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``lora_target_modules``, ``lora_layers``
    (:class:`~consistbench.reference_method.training_args.LoraArguments`).
    """

    # TrainingArguments defaults changed for this trainer.
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep query_mask in batches."})
    learning_rate: float = field(default=2e-5, metadata={"help": "AdamW learning rate (2e-5 suits full fine-tuning of a small model)."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the triplets."})
    per_device_train_batch_size: int = field(default=2, metadata={"help": "Triplets per device and step (3 sequences each)."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    save_steps: float = field(default=100, metadata={"help": "Checkpoint every N steps."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "No trackers unless asked."})

    alpha: float = field(default=1.0, metadata={"help": "Weight of the triplet term; 0 is plain SFT."})
    margin: float = field(default=0.2, metadata={"help": "Triplet margin."})
    distance: Distance = field(default="cosine", metadata={"help": "Triplet distance: cosine or euclidean."})
    pooling_layer: int = field(default=-1, metadata={"help": "hidden_states index pooled for the triplet term."})
    pooling: Pooling = field(default="mean", metadata={"help": "Query-token pooling: mean, last or max."})
    max_length: int = field(default=1024, metadata={"help": "Longest sequence; longer triplets are dropped."})
    examples: Examples = field(default="triplets", metadata={
        "help": "Training examples: mined triplets (anchor, positive, negative), or each row once (plain SFT; "
                "needs alpha 0)."})
    answer_logits_only: bool = field(default=False, metadata={
        "help": "Compute the LM head only at answer positions (same loss, less memory and time)."})

    def __post_init__(self):
        for name, kind in (("distance", Distance), ("pooling", Pooling), ("examples", Examples)):
            allowed = get_args(kind)
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.examples == "rows" and self.alpha != 0:
            raise ValueError("examples='rows' trains without triplets: it needs alpha 0")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {self.max_length}")
        super().__post_init__()

    def loss_settings(self) -> dict:
        """The fields that define the loss and the model setup (recorded in the model's card)."""
        names = ("alpha", "margin", "distance", "pooling_layer", "pooling", "max_length", "examples", "use_lora",
                 "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_layers", "learning_rate", "num_train_epochs",
                 "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "lr_scheduler_type",
                 "warmup_steps", "weight_decay", "max_steps")
        return {n: getattr(self, n) for n in names}
