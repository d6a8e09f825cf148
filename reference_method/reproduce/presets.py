"""The presets of the reproduction: every setting of one study, and the models it trains.

A :class:`Preset` holds everything a run does (recorded in the run folder's ``run.json``; a run
folder refuses a different preset). Add a preset to :data:`PRESETS`; a new setting is a field of
:class:`Preset` with a default, so that older run folders, which lack it, stay the same run
(:meth:`~consistbench.reference_method.reproduce.run_folder.Run.record`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

SPECIALISED = ("how_to", "plural_article", "paraphrase")
# what one setting of the search grid may set (ConsistencyConfig fields; alpha only for SFT + triplet models)
SEARCH_KEYS = ("learning_rate", "max_steps", "num_train_epochs", "alpha", "margin", "pooling_layer")
# settings of the triplet term only: an alpha-0 run (SFT, the ablation) keeps the preset's values, so its
# configuration does not depend on which margin or pooling layer the search chose
TRIPLET_ONLY_KEYS = ("margin", "pooling_layer")


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
    # The paper's setting for GPU users: Llama-3.1-8B-Instruct (pass its local folder with
    # --model; nothing is downloaded), every train question, LLM paraphrases, LoRA on every layer,
    # bf16, the whole dev set for the weights and the full test split. Multi-GPU: run the train
    # stage under `accelerate launch` (docs/REFERENCE_METHOD.md).
    "paper": Preset(
        name="paper",
        description="Llama-3.1-8B-Instruct (local folder via --model), all train questions, full test split",
        task="consistency",
        model=None,
        synth={"types": list(SPECIALISED), "n": 1, "seed": 0, "limit": None, "paraphraser": "local_lm"},
        train={"use_lora": True, "lora_r": 16, "lora_alpha": 32, "learning_rate": 1e-4, "num_train_epochs": 1.0,
               "per_device_train_batch_size": 4, "gradient_accumulation_steps": 4, "max_length": 1024,
               "warmup_steps": 20, "logging_steps": 10, "save_steps": 200, "seed": 0, "bf16": True,
               "margin": 0.2, "distance": "cosine", "pooling": "mean", "pooling_layer": -1},
        weights={"max_queries": None, "batch_size": 8},
        merge={"sparsify": "none", "non_layer": "measured"},
        eval_batch_size=16,
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
        train={"use_lora": True, "lora_r": 16, "lora_alpha": 32, "learning_rate": 2e-4,
               "num_train_epochs": 1.0, "max_steps": 40, "per_device_train_batch_size": 4, "max_length": 384,
               "warmup_steps": 4, "logging_steps": 10, "save_steps": 20, "seed": 0, "use_cpu": True,
               "margin": 0.2, "distance": "cosine", "pooling": "mean", "pooling_layer": -1,
               # the LM head at answer positions only: the same loss, 1.32x faster steps (docs/PERFORMANCE.md)
               "answer_logits_only": True},
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
}


# the label in the table of every model a reproduction makes (an --extra-model may not take one of these names)
ROW_LABELS = {"base": "base", "sft": "SFT", "sft_triplet_all": "SFT + triplet (all data)",
              "sft_triplet_expanded": "SFT (triplet-expanded rows, ablation)",
              "sft_triplet_how_to": "specialised: how_to", "sft_triplet_plural_article": "specialised: plural_article",
              "sft_triplet_paraphrase": "specialised: paraphrase", "merged": "merged (consistency)"}


def training_runs(preset: Preset) -> list[tuple[str, str, float]]:
    """(model name, variant type, alpha) of every model the train stage produces, in order."""
    # the specialised models first: weights and merge need only them
    runs = ([(f"sft_triplet_{t}", t, preset.triplet_alpha) for t in SPECIALISED]
            + [("sft_triplet_all", "all", preset.triplet_alpha), ("sft", "all", preset.sft_alpha)])
    if preset.sft_ablation:
        runs.append(("sft_triplet_expanded", "all", preset.sft_alpha))
    return runs
