"""The presets of the reproduction: every setting of one study, and the models it trains.

A :class:`Preset` holds everything a run does (recorded in the run folder's ``run.json``; a run
folder refuses a different preset). Add a preset to :data:`PRESETS`; a new setting is a field of
:class:`Preset` with a default, so that older run folders, which lack it, stay the same run
(:meth:`~consistbench.reference_method.reproduce.run_folder.Run.record`).

How a study runs (one process, or each heavy job under ``accelerate launch``) is not part of the
preset: it is an option of the command (:mod:`.launch`), so the same run folder can be continued
on another machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

SPECIALISED = ("how_to", "plural_article", "paraphrase")
SPECIALISTS = tuple(f"sft_triplet_{t}" for t in SPECIALISED)
# what one setting of the search grid may set (ConsistencyConfig fields; alpha only for SFT + triplet models)
SEARCH_KEYS = ("learning_rate", "max_steps", "num_train_epochs", "alpha", "margin", "pooling_layer")
# settings of the triplet term only: an alpha-0 run (SFT, the ablation) keeps the preset's values, so its
# configuration does not depend on which margin or pooling layer the search chose
TRIPLET_ONLY_KEYS = ("margin", "pooling_layer", "pooled_positions")
# the arms trained once per seed unless a preset says otherwise (the merged model follows its specialists)
DEFAULT_SEEDED_ARMS = ("sft", "sft_triplet_all", *SPECIALISTS)
NULL_MERGES = ("uniform", "task_arithmetic")
# the triplet-term search (Preset.triplet_search): its grid, thresholds and the brief trainings
TRIPLET_SEARCH_KEYS = {
    "pooled_positions": "where the triplet term pools (ConsistencyConfig.pooled_positions values)",
    "pooling_layers": "hidden_states indices; 'middle' is the model's middle layer",
    "negatives": "triplet mining's negatives (bottom, hard, random)",
    "margin_quantiles": "margin = this quantile of d(A,N) - d(A,P) measured at step 0",
    "alphas": "the triplet weights tried for the survivors",
    "min_active_share": "keep a setting when at least this share of triplets is active at step 0",
    "min_grad_ratio": "... and its gradient is at least this share of the CE gradient's",
    "survivors": "at most this many settings (the most active first) go on to brief training",
    "screen_triplets": "triplets the step-0 screen looks at",
    "brief_steps": "optimizer steps of each brief training of the all-data model",
}


@dataclass
class Preset:
    """Every setting of one reproduction (recorded in ``run.json``)."""

    name: str
    description: str
    task: str  # lm-eval task scored for the table
    model: str | None  # base model folder; None: the embedded SmolLM2-135M-Instruct
    synth: dict  # keyword arguments of reference_method.synth.synthesize (+ paraphraser, paraphrase_model)
    train: dict  # ConsistencyConfig fields shared by every training run
    mining: dict = field(default_factory=dict)  # MiningConfig fields
    sft_alpha: float = 0.0  # the plain SFT row
    triplet_alpha: float = 1.0  # every SFT + triplet model
    weights: dict = field(default_factory=dict)  # WeightsOptions fields
    merge: dict = field(default_factory=dict)  # parameters of the `consistency` merge method
    eval_batch_size: int = 8
    questions_per_type: int | None = None  # training questions per variant type (None: every synthetic one)
    all_data_questions: int | None = None  # all-data and SFT models: questions, one variant each (None: the union)
    # The `sft` row: "triplets" = SFT on the triplet-expanded rows (cpu-mini's), "rows" = the paper's
    # plain SFT (the same rows, each once per epoch); sft_train: ConsistencyConfig fields for it only.
    sft_examples: str = "triplets"
    sft_train: dict = field(default_factory=dict)
    sft_ablation: bool = False  # also train `sft_triplet_expanded` (alpha 0 on the triplets): an ablation row
    eval_device: str | None = "train"  # "train": cpu when train.use_cpu, else cuda; None: lm-eval's choice
    # The search stage: each setting (SEARCH_KEYS) trains the all-data SFT + triplet model and is scored on
    # search_task (a dev task, never the test); the best one is used by every later training run.
    search_task: str = "consistency_dev"
    search_grid: list[dict] = field(default_factory=list)
    temperatures: list[float] = field(default_factory=list)  # weights temperatures tried on search_task after merge
    paired: bool = False  # the table adds paired comparisons of the merged model (difference, 95% interval, p)

    # --- compute (where and in which precision each stage runs; docs/REFERENCE_METHOD.md, "At the paper's scale")
    weights_device: str | None = None  # the weights stage's forward passes: None = cpu, "auto" = cuda when present
    weights_dtype: str = "float32"  # ... and their torch dtype
    # evaluation: "default" = consistbench's fp32 transformers model (the canonical numerics);
    # "auto" = lm-eval's vllm model when vllm is installed, else lm-eval's hf model; both in eval_dtype
    eval_model: str = "default"
    eval_dtype: str = "float32"

    # --- the fair test (docs/REPRODUCTION.md, "The cpu-fair preset"); every default keeps an older run the same
    epochs: float | None = None  # every trained arm: this many epochs over its own data (max_steps off); paper: 2
    sft_dose: bool = False  # the `sft_dose` row: plain SFT on as many sequences as the three specialists together
    seeds: list[int] = field(default_factory=lambda: [0])  # the first keeps today's model names; others `name@sN`
    seeded_arms: list[str] = field(default_factory=lambda: list(DEFAULT_SEEDED_ARMS))
    equivalence_margin: float | None = None  # TOST margin on EM and RS in the table (None: no equivalence test)
    null_merges: list[str] = field(default_factory=list)  # rows "uniform" (average) and "task_arithmetic"
    ta_scales: list[float] = field(default_factory=list)  # task arithmetic's scale of the mean task vector, on dev
    weights_distances: list[str] = field(default_factory=list)  # WeightsOptions.distance values tried on dev
    triplet_search: dict = field(default_factory=dict)  # the triplet-term search (TRIPLET_SEARCH_KEYS)
    eval_checkpoints: list[float] = field(default_factory=list)  # fractions of checkpoint_arm's steps scored on dev
    checkpoint_arm: str = "sft_triplet_all"
    eval_groups: int | None = None  # evaluate a fixed stratified subset of this many test groups (None: all)


def _train(**kw) -> dict:
    return {"use_lora": True, "lora_r": 16, "lora_alpha": 32, "margin": 0.2, "distance": "cosine",
            "pooling": "mean", "pooling_layer": -1, **kw}


CPU_TRAIN = _train(learning_rate=2e-4, num_train_epochs=1.0, max_steps=40, per_device_train_batch_size=4,
                   max_length=384, warmup_steps=4, logging_steps=10, save_steps=20, seed=0, use_cpu=True,
                   # the LM head at answer positions only: the same loss, 1.32x faster steps (docs/PERFORMANCE.md)
                   answer_logits_only=True)

PRESETS: dict[str, Preset] = {
    # Sized for 2 CPU cores (measured: ~1 h 50 min wall with the models trained and evaluated in two
    # single-thread processes side by side; docs/REPRODUCTION.md). Choices that differ from the
    # paper, and why: LoRA on the last 4 of 30 layers (backpropagation stops there: ~3x cheaper
    # steps), sequences <= 384 tokens (longer groups are not selected; nothing is truncated), WordNet
    # paraphrases (no generation pass), 128 dev queries for the weights, the 37-group mini test.
    "cpu-mini": Preset(
        name="cpu-mini",
        description="SmolLM2-135M-Instruct on CPU: a few hundred train questions, LoRA on the last layers",
        task="consistency_mini",
        model=None,
        synth={"types": list(SPECIALISED), "n": 1, "seed": 0, "limit": None, "paraphraser": "wordnet"},
        train={"use_lora": True, "lora_r": 16, "lora_alpha": 32, "lora_layers": 4, "learning_rate": 2e-4,
               "num_train_epochs": 1.0, "per_device_train_batch_size": 4, "max_length": 384,
               "warmup_steps": 5, "logging_steps": 10, "save_steps": 25, "seed": 0, "use_cpu": True,
               "margin": 0.2, "distance": "cosine", "pooling": "mean", "pooling_layer": -1},
        weights={"max_queries": 128, "batch_size": 8},
        merge={"sparsify": "none", "non_layer": "measured"},
        eval_batch_size=8,
        questions_per_type=200,
        all_data_questions=210,
    ),
    # The paper's study for GPU users: Llama-3.1-8B-Instruct or Gemma-3-12B-Instruct (a local folder via
    # --model; nothing is downloaded), every train question, LLM paraphrases, LoRA r16 on every layer, 2 epochs
    # for every arm, the paper's plain SFT on the rows plus the triplet-expanded ablation, learning rate /
    # alpha / margin / pooling layer and the weights' temperature chosen on consistency_dev, the full test
    # split, paired tests. The memory plan fits one 80 GB GPU for 8B (`--dry-run` prints it): bf16 weights,
    # gradient checkpointing, the LM head at answer positions only, the weights stage and evaluation on the
    # GPU in bf16. Several GPUs: --launcher accelerate (docs/REFERENCE_METHOD.md, "At the paper's scale").
    "paper": Preset(
        name="paper",
        description="Llama-3.1-8B / Gemma-3-12B Instruct (local folder via --model): the paper's table on GPUs, bf16",
        task="consistency",
        model=None,
        synth={"types": list(SPECIALISED), "n": 1, "seed": 0, "limit": None, "paraphraser": "local_lm"},
        train=_train(learning_rate=1e-4, per_device_train_batch_size=4, gradient_accumulation_steps=4,
                     max_length=1024, warmup_steps=20, logging_steps=10, save_steps=200, seed=0,
                     bf16=True, model_dtype="bfloat16", gradient_checkpointing=True, answer_logits_only=True),
        weights={"max_queries": None, "batch_size": 16},
        merge={"sparsify": "none", "non_layer": "measured"},
        eval_batch_size=16,
        sft_examples="rows",
        sft_ablation=True,
        eval_device="train",
        search_task="consistency_dev",
        # one change at a time from the first setting, each trained for the preset's 2 epochs
        search_grid=[
            {"learning_rate": 1e-4, "alpha": 1.0, "margin": 0.2, "pooling_layer": -1},
            {"learning_rate": 5e-5, "alpha": 1.0, "margin": 0.2, "pooling_layer": -1},
            {"learning_rate": 1e-4, "alpha": 0.5, "margin": 0.2, "pooling_layer": -1},
            {"learning_rate": 1e-4, "alpha": 1.0, "margin": 0.5, "pooling_layer": -1},
            {"learning_rate": 1e-4, "alpha": 1.0, "margin": 0.2, "pooling_layer": "middle"},
        ],
        temperatures=[0.02, 0.05, 0.2, 1.0],
        paired=True,
        weights_device="auto",
        weights_dtype="bfloat16",
        eval_model="auto",
        eval_dtype="bfloat16",
        epochs=2.0,
    ),
    # The reference method set up so that an effect, if it has one at this scale, can show (docs/REPRODUCTION.md,
    # "The cpu preset"): the paper's training set (every train question that fits max_length, with all its
    # synthetic variants; CE on originals and variants, a variant's target being its group's reference;
    # triplets over the same rows), LoRA on every layer (per-layer weights can differ everywhere), the
    # paper's plain SFT (each row once) beside the triplet-expanded SFT as an ablation, steps / learning
    # rate / alpha / margin / pooling layer and the weights' temperature chosen on consistency_dev, the
    # evaluation on consistency_small (whole test groups) and paired tests of the merged model in the table.
    "cpu": Preset(
        name="cpu",
        description="SmolLM2-135M-Instruct on CPU: every train question, LoRA on every layer, settings chosen on dev",
        task="consistency_small",
        model=None,
        synth={"types": list(SPECIALISED), "n": 1, "seed": 0, "limit": None, "paraphraser": "wordnet"},
        train=dict(CPU_TRAIN),
        weights={"max_queries": 128, "batch_size": 8},
        merge={"sparsify": "none", "non_layer": "measured"},
        eval_batch_size=8,
        questions_per_type=None,
        all_data_questions=None,
        sft_examples="rows",
        sft_train={"max_steps": -1, "num_train_epochs": 1.0},  # every row exactly once
        sft_ablation=True,
        eval_device=None,
        search_task="consistency_dev",
        # one change at a time from the first setting (30 layers: 15 is the middle one)
        search_grid=[
            {"learning_rate": 2e-4, "max_steps": 40, "alpha": 1.0, "margin": 0.2, "pooling_layer": -1},
            {"learning_rate": 1e-4, "max_steps": 40, "alpha": 1.0, "margin": 0.2, "pooling_layer": -1},
            {"learning_rate": 2e-4, "max_steps": 80, "alpha": 1.0, "margin": 0.2, "pooling_layer": -1},
            {"learning_rate": 2e-4, "max_steps": 40, "alpha": 0.5, "margin": 0.2, "pooling_layer": -1},
            {"learning_rate": 2e-4, "max_steps": 40, "alpha": 1.0, "margin": 0.5, "pooling_layer": -1},
            {"learning_rate": 2e-4, "max_steps": 40, "alpha": 1.0, "margin": 0.2, "pooling_layer": 15},
        ],
        temperatures=[0.02, 0.05, 0.2, 1.0],
        paired=True,
    ),
    # The reference method tested fairly on CPU (docs/REPRODUCTION.md, "The cpu-fair preset"): every trained
    # arm gets the same 2 epochs over its own data, a dose-matched SFT row, three seeds of every arm that
    # enters a comparison, the null merges (uniform average, task arithmetic with its scale chosen on dev),
    # the weights' distance and temperature chosen on dev, the triplet term's settings screened at step 0 and
    # chosen on dev, equivalence tests (TOST) beside the paired tests. Grid sizes are data: the lead may
    # revise them after the trainer's speed figures.
    "cpu-fair": Preset(
        name="cpu-fair",
        description="SmolLM2-135M-Instruct on CPU: the reference method against equal-budget SFT, null merges, "
                    "3 seeds, settings chosen on dev",
        task="consistency",
        model=None,
        synth={"types": list(SPECIALISED), "n": 1, "seed": 0, "limit": None, "paraphraser": "wordnet"},
        # the shared prompt prefix computed once per batch: the same loss to float rounding, fewer positions
        train={**{k: v for k, v in CPU_TRAIN.items() if k != "max_steps"}, "share_prefix": True},
        weights={"max_queries": 128, "batch_size": 8},
        merge={"sparsify": "none", "non_layer": "measured"},
        eval_batch_size=8,
        sft_examples="rows",
        sft_ablation=True,
        eval_device=None,
        search_task="consistency_dev",
        temperatures=[0.02, 0.05, 0.2, 1.0],
        paired=True,
        epochs=2.0,
        sft_dose=True,
        seeds=[0, 1, 2],
        equivalence_margin=0.03,
        null_merges=list(NULL_MERGES),
        # each task vector's weight (theta_base + scale * sum_k delta_k): 1/3 would be the uniform average
        ta_scales=[0.25, 0.5, 0.75, 1.0],
        weights_distances=["paper", "centered"],
        triplet_search={"pooled_positions": ["question", "question_only"], "pooling_layers": [-1, "middle"],
                        "negatives": ["bottom", "hard"], "margin_quantiles": [0.5, 0.9], "alphas": [0.5, 1.0],
                        "min_active_share": 0.05, "min_grad_ratio": 0.01, "survivors": 2, "screen_triplets": 32,
                        "brief_steps": 40},
        eval_checkpoints=[0.25, 0.5, 0.75, 1.0],
        checkpoint_arm="sft_triplet_all",
    ),
}

# Full fine-tuning at the paper's scale (8-12B): the `paper` study without LoRA, a learning rate for
# full fine-tuning; it fits only sharded: --launcher accelerate --accelerate-config deepspeed-zero3 (or
# fsdp) over several GPUs (`--dry-run` prints the plan and refuses one that cannot fit).
PRESETS["paper-full"] = replace(
    PRESETS["paper"], name="paper-full",
    description="the paper preset with full fine-tuning (no LoRA), sharded with DeepSpeed ZeRO-3 or FSDP",
    train={**{k: v for k, v in PRESETS["paper"].train.items() if not k.startswith("lora")}, "use_lora": False,
           "learning_rate": 1e-5},
    search_grid=[{**s, "learning_rate": s["learning_rate"] / 10} for s in PRESETS["paper"].search_grid],
)

# The fair-test choices (`consistbench ref reproduce --fair`) for a preset that trains every arm for the same
# epochs (`paper`, `paper-full`): a dose-matched SFT row, three seeds of every arm that enters a comparison,
# the null merges (uniform average; task arithmetic, its scale chosen on dev), the weights' distance chosen on
# dev beside the temperature, and equivalence tests; `--seeds` sets other seeds.
FAIR = {"sft_dose": True, "seeds": [0, 1, 2], "null_merges": list(NULL_MERGES), "ta_scales": [0.25, 0.5, 0.75, 1.0],
        "weights_distances": ["paper", "centered"], "equivalence_margin": 0.03}


def with_options(preset: Preset, *, fair: bool = False, seeds: list[int] | None = None) -> Preset:
    """``preset`` with the fair-test choices (:data:`FAIR`) and/or other ``seeds``: a preset of its own name
    (``paper+fair``), so a run folder of the plain preset refuses it (and the default run folder differs)."""
    if not fair and seeds is None:
        return preset
    fields = dict(FAIR) if fair else {}
    if seeds is not None:
        fields["seeds"] = list(seeds)
    if fair and not preset.temperatures:
        fields["temperatures"] = [0.02, 0.05, 0.2, 1.0]  # the distance is chosen with a temperature on dev
    suffix = ("+fair" if fair else "") + ("+seeds" + "-".join(map(str, seeds)) if seeds is not None else "")
    return replace(preset, name=preset.name + suffix, **fields)


# the label in the table of every model a reproduction makes (an --extra-model may not take one of these names)
ROW_LABELS = {"base": "base", "sft": "SFT", "sft_dose": "SFT (dose-matched: the specialists' sequences)",
              "sft_triplet_all": "SFT + triplet (all data)",
              "sft_triplet_expanded": "SFT (triplet-expanded rows, ablation)",
              "sft_triplet_how_to": "specialised: how_to", "sft_triplet_plural_article": "specialised: plural_article",
              "sft_triplet_paraphrase": "specialised: paraphrase", "merged": "merged (consistency)",
              "uniform": "uniform average (null merge)", "task_arithmetic": "task arithmetic (null merge)"}


def seeded(name: str, seed: int, preset: Preset) -> str:
    """The model name of arm ``name`` trained with ``seed``: the preset's first seed keeps the plain name."""
    return name if seed == preset.seeds[0] else f"{name}@s{seed}"


def arm_of(name: str) -> str:
    """The arm of a model name (``sft@s1`` -> ``sft``)."""
    return name.split("@", 1)[0]


def seed_of(name: str, preset: Preset) -> int:
    """The seed of a model name (the preset's first seed for a plain name)."""
    return int(name.split("@s", 1)[1]) if "@s" in name else preset.seeds[0]


def arm_seeds(arm: str, preset: Preset) -> list[int]:
    """The seeds arm ``arm`` is trained (or merged) with: every seed for a seeded arm, else the first."""
    merged_from = arm in ("merged", *NULL_MERGES) and set(SPECIALISTS) <= set(preset.seeded_arms)
    return list(preset.seeds) if arm in preset.seeded_arms or merged_from else [preset.seeds[0]]


def training_runs(preset: Preset) -> list[tuple[str, str, float]]:
    """(model name, variant type, alpha) of every model the train stage produces, in order: the
    specialised models first (weights and merge need only them), each arm once per seed."""
    arms = ([(f"sft_triplet_{t}", t, preset.triplet_alpha) for t in SPECIALISED]
            + [("sft_triplet_all", "all", preset.triplet_alpha), ("sft", "all", preset.sft_alpha)])
    if preset.sft_ablation:
        arms.append(("sft_triplet_expanded", "all", preset.sft_alpha))
    if preset.sft_dose:
        arms.append(("sft_dose", "all", preset.sft_alpha))
    return [(seeded(name, s, preset), vtype, alpha) for s in preset.seeds for name, vtype, alpha in arms
            if s == preset.seeds[0] or name in preset.seeded_arms]
