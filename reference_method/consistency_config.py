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
PooledPositions = Literal["question", "question_only", "prompt"]
ModelDtype = Literal["float32", "bfloat16", "auto"]


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

    pooled_positions (`Literal["question", "question_only", "prompt"]`, *optional*, defaults to `"question"`):
        Which token states ``f(.)`` pools. ``question``: the question's tokens inside the full
        prompt (after the instruction and the passage, so anchor and positive states carry the
        same passage and start close together: d(A,P) ~0.01 at step 0 on the ``cpu`` preset).
        ``question_only``: the question alone in a separate forward pass (chat-templated as the
        prompt is, or raw), pooled over its tokens: the query's own representation, without the
        passage; costs a forward and backward of the short question sequences. ``prompt``: every
        prompt token (instruction, passage, question). Default: the behaviour of every earlier run.

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
        the decoder's last hidden state, which is checked once on the first batch (to bf16's
        precision under ``bf16`` or ``model_dtype="bfloat16"``, so the path stays on there);
        any other model (logit soft-capping or scaling) keeps the standard path, with a warning.
        Off by default so that a run's numerics match runs made before it existed (the two paths
        agree to float rounding, not bit for bit). Works under several processes (``accelerate
        launch``): the forward goes through the DDP wrapper.
    padding_free (`bool`, *optional*, defaults to `False`):
        Compute each sequence (or each shared-prefix tree, below) in its own forward call, without
        padding, instead of one call over the batch padded to its longest sequence (28 % of the
        ``cpu`` preset's positions are padding). Same loss and gradients to float rounding; on
        CPU the calls cost what their tokens cost. On a GPU many small calls under-use it: prefer
        ``train_sampling_strategy="group_by_length"`` there.
    share_prefix (`bool`, *optional*, defaults to `False`):
        Compute once the prompt prefix that sequences of a batch share (the instruction and the
        passage up to the question: a triplet's anchor and positive, rows of one group): the prefix
        is laid out once and each sequence's suffix attends to it through a 4-D mask, at the
        positions it has in its own sequence; identical sequences are computed once. Same loss,
        pooled states and gradients as the padded batch to float rounding
        (:mod:`consistbench.reference_method.packing`). Needs eager or sdpa attention (other
        implementations, and sequences longer than a sliding window, are computed unshared).
        Off by default so that earlier runs keep their numerics.
    group_by_passage (`bool`, *optional*, defaults to `False`):
        Order each epoch passage by passage (a shuffled order of passages, each passage's examples
        together), so the rows of one group share a batch and ``share_prefix`` computes their
        passage once. Every example is still drawn once per epoch; the batches' composition, hence
        the trajectory, changes. For length-grouped batches use ``train_sampling_strategy=
        "group_by_length"`` (it works for triplets here: a triplet's length is its longest sequence).
    log_grad_ratio (`bool`, *optional*, defaults to `True`):
        At step 0 and every ``logging_steps``, measure the norm of the triplet term's gradient
        (times alpha) over the CE gradient's on the trainable parameters, kept in ``loss_history``
        as ``grad_ratio``: two extra backward passes on those steps only (about 1.6x such a step,
        so ~6 % of the run at ``logging_steps=10``). The share of active triplets and the mean
        distances are kept every step at no cost.
    model_dtype (`Literal["float32", "bfloat16", "auto"]`, *optional*, defaults to `"float32"`):
        The dtype the base weights are loaded in (``auto``: the checkpoint's). bfloat16 halves the
        weights' memory (for 8B models on one GPU); LoRA adapters stay float32 (peft). Mixed
        precision is separate: ``bf16=True`` (autocast; also on CPU with ``use_cpu``).

    Compute settings inherited from ``TrainingArguments`` that this trainer supports on every path
    above: ``bf16`` (bfloat16 autocast; ``bench/bf16_curve.py`` compares its loss curve with
    fp32's), ``gradient_checkpointing`` (non-reentrant unless ``gradient_checkpointing_kwargs``
    says otherwise, so LoRA adapters inside checkpointed blocks get gradients and the gradient
    ratio can be measured) and ``train_sampling_strategy="group_by_length"`` (batches of similar
    length, for triplets too: :class:`~consistbench.reference_method.samplers.GroupedSampler`;
    changes the batches, hence the trajectory).

    > Activity (logged, not a setting of the loss)

    At step 0 and every ``logging_steps`` the trainer adds to ``Trainer.state.log_history`` (so to
    ``trainer_state.json``) an entry with ``triplet_active`` (share of triplets whose hinge is
    positive), ``grad_ratio`` (above), ``d_ap``, ``d_an``, ``ce`` and ``triplet`` of that step's
    first micro-batch; every training log also carries the mean ``ce``, ``triplet`` and
    ``triplet_active`` since the previous log.

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
    pooled_positions: PooledPositions = field(default="question", metadata={
        "help": "What the triplet term pools: the question inside the prompt, the question alone (separate "
                "forward pass), or every prompt token."})
    padding_free: bool = field(default=False, metadata={
        "help": "Compute each sequence (or shared-prefix tree) unpadded in its own forward call."})
    share_prefix: bool = field(default=False, metadata={
        "help": "Compute the prompt prefix that sequences of a batch share (instruction and passage) once."})
    group_by_passage: bool = field(default=False, metadata={
        "help": "Order each epoch passage by passage, so rows sharing a passage share a batch."})
    log_grad_ratio: bool = field(default=True, metadata={
        "help": "Measure the triplet/CE gradient-norm ratio at step 0 and every logging_steps (two extra backward "
                "passes on those steps)."})
    model_dtype: ModelDtype = field(default="float32", metadata={
        "help": "dtype of the loaded base weights: float32, bfloat16 or auto (the checkpoint's)."})

    def __post_init__(self):
        for name, kind in (("distance", Distance), ("pooling", Pooling), ("examples", Examples),
                           ("pooled_positions", PooledPositions), ("model_dtype", ModelDtype)):
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
        if self.group_by_passage and self.train_sampling_strategy != "random":
            raise ValueError("group_by_passage orders the epoch itself: it needs train_sampling_strategy 'random', "
                             f"got {self.train_sampling_strategy!r}")
        if self.gradient_checkpointing and self.gradient_checkpointing_kwargs is None:
            # non-reentrant checkpointing: gradients reach LoRA adapters without inputs that require grad,
            # and the gradient-ratio measurement (torch.autograd.grad) works through it
            self.gradient_checkpointing_kwargs = {"use_reentrant": False}
        super().__post_init__()

    def loss_settings(self) -> dict:
        """The fields that define the loss and the model setup (recorded in the model's card)."""
        names = ("alpha", "margin", "distance", "pooling_layer", "pooling", "max_length", "examples", "use_lora",
                 "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_layers", "learning_rate", "num_train_epochs",
                 "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "lr_scheduler_type",
                 "warmup_steps", "weight_decay", "max_steps")
        out = {n: getattr(self, n) for n in names}
        # settings added later are recorded only when they differ from their default, so that a run
        # made before they existed keeps its fingerprint (and can be resumed)
        for name, default in (("pooled_positions", "question"), ("group_by_passage", False),
                              ("train_sampling_strategy", "random"), ("model_dtype", "float32")):
            if getattr(self, name) != default:
                out[name] = getattr(self, name)
        return out

    def compute_settings(self) -> dict:
        """How the steps are computed (recorded in the model's card; the loss is the same either way)."""
        return {"padding_free": self.padding_free, "share_prefix": self.share_prefix, "bf16": self.bf16,
                "model_dtype": self.model_dtype, "gradient_checkpointing": self.gradient_checkpointing,
                "log_grad_ratio": self.log_grad_ratio}
