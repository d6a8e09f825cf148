"""``consistbench ref reproduce --preset cpu|cpu-mini|paper``: the paper's table, end to end.

Stages (each writes its output atomically and is skipped when that output already exists, so a
crashed or interrupted run continues where it stopped; a half-trained model resumes from its
last checkpoint):

0. ``base``    -> ``base/`` only when ``consistbench doctor`` finds an error in the base model (e.g.
   SmolLM2's pad token is its eos token): the doctor's corrected copy, with the same weights,
   becomes the base of every later stage (training, weights, merge and the base row);
1. ``synth``   -> ``synth/synth.jsonl``: synthetic variants of train questions (:mod:`.synth`);
   ``select``  -> ``synth/train.jsonl``: with ``questions_per_type`` set, a seeded choice of that
   many questions per variant type among those whose longest training sequence fits
   ``max_length`` (so the count holds after the trainer's length filter); else every group that
   fits, whole (so triplets and rows drop nothing and plain SFT sees exactly the triplet models' rows). With
   ``all_data_questions`` set, also ``synth/train_all.jsonl`` for the all-data and SFT models:
   that many of the chosen questions, each with one variant, the types in equal shares (the
   same training budget as one specialised model); else those two train on the union;
   ``search``  -> ``search/search.jsonl``, ``search/chosen.json``, ``search/search.png`` (presets with a
   ``search_grid``): each setting (learning rate, steps, alpha, margin, pooling layer) trains the
   all-data SFT + triplet model and is scored on ``search_task`` (the dev split), a line per setting as
   it finishes (a rerun skips scored settings); the highest dev mean of EM and RS wins (ties: fewer
   steps), and its model becomes ``models/sft_triplet_all``;
2. ``train``   -> ``models/<name>/``: plain SFT (``alpha = 0``) on all data, SFT + triplet on all
   data (the all-data model), and one SFT + triplet model per variant type (:mod:`.train`), with the
   search's chosen setting when there is one. The ``sft`` row is SFT on the triplet-expanded rows
   (``sft_examples="triplets"``) or the paper's SFT on the rows, each once (``"rows"``); with
   ``sft_ablation`` the triplet-expanded one is trained as well, as ``sft_triplet_expanded``;
3. ``weights`` -> ``weights/weights.json`` + heatmap: consistency weights of the specialised
   models on dev queries (:mod:`.consistency_weights`);
4. ``merge``   -> ``models/merged/``: ``theta_base + sum_k w_k^l delta_k^l`` (:mod:`.merge`);
   ``temperature`` -> ``search/temperature.jsonl``, ``search/temperature_chosen.json`` (presets with
   ``temperatures``): the weights at each temperature (from the similarities the weights stage
   kept), a merged candidate each, scored on ``search_task``; the best replaces ``models/merged``;
5. ``eval``    -> ``eval/<name>/``: every model through lm-eval (:func:`consistbench.benchmark.evaluate.run_eval`);
6. ``table``   -> ``results/results.{md,json,png}``: ROUGE-L, BLEU, EM, RS, BS per model; with
   ``paired``, merged minus base, SFT and the best specialised model (``consistbench compare``'s
   paired bootstrap: difference, 95% interval, p for EM, RS and BS).

Nothing before the eval stage reads the test split: the search and the temperature are scored on
``search_task`` only, and a preset whose search task is its table's task is refused.

``--extra-model NAME=DIR`` adds already-trained models (e.g. preference-based fusion) as rows:
they are evaluated like the others. Wall time per stage is kept in ``timings.json``.

Presets (:data:`PRESETS`) hold every setting; ``run.json`` records the preset a run directory was
started with and a different one is refused (use another ``-o RUN_DIR``).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError

SPECIALISED = ("how_to", "plural_article", "paraphrase")
TABLE_METRICS = (("rougeL", "ROUGE-L"), ("bleu", "BLEU"), ("em", "EM"), ("rs", "RS"), ("bs", "BS"))
STAGES = ("base", "synth", "select", "search", "train", "weights", "merge", "temperature", "eval", "table")
# what one setting of the search grid may set (ConsistencyConfig fields; alpha only for SFT + triplet models)
SEARCH_KEYS = ("learning_rate", "max_steps", "num_train_epochs", "alpha", "margin", "pooling_layer")
# settings of the triplet term only: an alpha-0 run (SFT, the ablation) keeps the preset's values, so its
# configuration does not depend on which margin or pooling layer the search chose
TRIPLET_ONLY_KEYS = ("margin", "pooling_layer")
# the paired comparisons of the table (merged minus another model)
PAIRED_METRICS = ("em", "rs", "bs")


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


def spread_summary(doc: dict) -> str:
    """One line on how far the weights are from uniform: the largest and the median per-row spread."""
    from consistbench.reference_method.consistency_weights import row_label, weight_spread

    spread = weight_spread(doc)
    row, top = max(spread.items(), key=lambda kv: kv[1])
    return (f"weights spread (max - min over models, per row): largest {top:.4f} at {row_label(row)}, "
            f"median {statistics.median(spread.values()):.4f}")


def training_runs(preset: Preset) -> list[tuple[str, str, float]]:
    """(model name, variant type, alpha) of every model the train stage produces, in order."""
    # the specialised models first: weights and merge need only them
    runs = ([(f"sft_triplet_{t}", t, preset.triplet_alpha) for t in SPECIALISED]
            + [("sft_triplet_all", "all", preset.triplet_alpha), ("sft", "all", preset.sft_alpha)])
    if preset.sft_ablation:
        runs.append(("sft_triplet_expanded", "all", preset.sft_alpha))
    return runs


def choose_setting(results: list[dict], train: dict) -> dict:
    """The search's rule: the highest dev mean of EM and RS; a tie goes to fewer training steps, then to
    the earlier setting of the grid. ``results`` are search.jsonl records in grid order."""
    if not results:
        raise ConsistbenchError("[search] no scored setting to choose from")

    def steps(r: dict) -> float:
        s = {**train, **r["setting"]}
        return s["max_steps"] if s.get("max_steps", -1) > 0 else float("inf")

    return min(enumerate(results), key=lambda ir: (-ir[1]["score"], steps(ir[1]), ir[0]))[1]


ROW_LABELS = {"base": "base", "sft": "SFT", "sft_triplet_all": "SFT + triplet (all data)",
              "sft_triplet_expanded": "SFT (triplet-expanded rows, ablation)",
              "sft_triplet_how_to": "specialised: how_to", "sft_triplet_plural_article": "specialised: plural_article",
              "sft_triplet_paraphrase": "specialised: paraphrase", "merged": "merged (consistency)"}


# ---------------------------------------------------------------------------------------------

class Run:
    """One run directory and its stages."""

    def __init__(self, preset: Preset, run_dir: str | Path, *, model: str | None = None,
                 extra_models: dict[str, str] | None = None, log: Callable[[str], None] = print,
                 progress: bool = False, allow_missing: bool = False, only: set[str] | None = None):
        self.preset = copy.deepcopy(preset)
        if model is not None:
            self.preset.model = str(Path(model).expanduser().resolve())
        self.dir = Path(run_dir).expanduser()
        self.extra = dict(extra_models or {})
        self.log = log
        self.progress = progress
        self.allow_missing = allow_missing
        self.only = set(only) if only else None  # train/eval just these models (e.g. the merge's inputs first)
        known = {n for n, _, _ in training_runs(self.preset)} | {"base", "merged"} | set(self.extra)
        if self.only and self.only - known:
            raise ConsistbenchError(f"--only: unknown model {sorted(self.only - known)[0]!r} "
                                    f"(expected some of {', '.join(sorted(known))})")
        for i, setting in enumerate(self.preset.search_grid):
            bad = sorted(set(setting) - set(SEARCH_KEYS))
            if bad:
                raise ConsistbenchError(f"preset {self.preset.name}: search setting {i} sets {bad[0]!r} "
                                        f"(a setting may set {', '.join(SEARCH_KEYS)})")
        if self.preset.search_grid and self.preset.search_task == self.preset.task:
            raise ConsistbenchError(f"preset {self.preset.name}: the search scores on {self.preset.task}, "
                                    "the task of the table; settings are chosen on a dev task only")
        for name, path in self.extra.items():
            if name in ROW_LABELS:
                raise ConsistbenchError(f"--extra-model {name}: the name is taken by a reproduction model")
            if not (Path(path) / "config.json").is_file():
                raise ConsistbenchError(f"--extra-model {name}={path}: not a model folder (no config.json)")

    # -- paths ------------------------------------------------------------------------------
    @property
    def synth_file(self) -> Path:
        return self.dir / "synth" / "synth.jsonl"

    def model_dir(self, name: str) -> Path:
        return self.dir / "models" / name

    @property
    def weights_file(self) -> Path:
        return self.dir / "weights" / "weights.json"

    def eval_dir(self, name: str) -> Path:
        return self.dir / "eval" / name

    @property
    def results_dir(self) -> Path:
        return self.dir / "results"

    def base_model(self) -> Path:
        """The base every stage uses: the doctor's corrected copy when one was needed."""
        fixed = self.dir / "base"
        return fixed if (fixed / "config.json").is_file() else self.source_model()

    def source_model(self) -> Path:
        """The base model as given (``--model``, or the embedded SmolLM2)."""
        if self.preset.model:
            return Path(self.preset.model)
        if self.preset.name == "paper":
            raise ConsistbenchError("preset paper: pass the base model's local folder with --model "
                                    "(e.g. a downloaded meta-llama/Llama-3.1-8B-Instruct); nothing is downloaded")
        from consistbench.benchmark.embedded import convert_smollm2

        return Path(convert_smollm2())

    def models_to_eval(self) -> dict[str, Path]:
        """Every row of the table in the paper's order: base, SFT, SFT + triplet, specialised, merged, extras."""
        out = {"base": self.base_model(), "sft": self.model_dir("sft")}
        if self.preset.sft_ablation:
            out["sft_triplet_expanded"] = self.model_dir("sft_triplet_expanded")
        out["sft_triplet_all"] = self.model_dir("sft_triplet_all")
        out.update({f"sft_triplet_{t}": self.model_dir(f"sft_triplet_{t}") for t in SPECIALISED})
        out["merged"] = self.model_dir("merged")
        out.update({k: Path(v) for k, v in self.extra.items()})
        return out

    # -- bookkeeping ------------------------------------------------------------------------
    def _record(self) -> None:
        from consistbench.benchmark.fileio import write_json

        self.dir.mkdir(parents=True, exist_ok=True)
        record = {"preset": asdict(self.preset)}
        path = self.dir / "run.json"
        if path.is_file():
            before = json.loads(path.read_text(encoding="utf-8")).get("preset", {})
            now = json.loads(json.dumps(record["preset"]))
            # a setting added to Preset after the run started is the same run when it holds its default
            defaults = json.loads(json.dumps(asdict(Preset(**{k: before.get(k) for k in
                                                              ("name", "description", "task", "model", "synth", "train")}))))
            changed = sorted(k for k, v in now.items() if before.get(k, defaults.get(k)) != v)
            if changed:
                raise ConsistbenchError(f"{self.dir}: started with other settings ({', '.join(changed)}); "
                                        "use another -o RUN_DIR or remove it")
        else:
            write_json(path, record)

    def _timing(self, key: str, seconds: float) -> None:
        from consistbench.benchmark.fileio import write_json

        path = self.dir / "timings.json"
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        data[key] = round(seconds, 1)
        write_json(path, data)

    def timings(self) -> dict:
        path = self.dir / "timings.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def _timed(self, key: str, fn: Callable[[], object]):
        t0 = time.perf_counter()
        out = fn()
        self._timing(key, time.perf_counter() - t0)
        self.log(f"[{key}] done in {time.perf_counter() - t0:.0f} s")
        return out

    # -- stages -----------------------------------------------------------------------------
    def stage_base(self) -> None:
        from consistbench.reference_method import doctor

        src, fixed = self.source_model(), self.dir / "base"
        if (fixed / "config.json").is_file():
            self.log(f"[base] {fixed} exists: skipped")
            return
        errors = [f for f in doctor.check(src) if f.severity == "error"]
        if not errors:
            self.log(f"[base] {src}: doctor found no error, used as it is")
            return
        self.log(f"[base] {src}: " + "; ".join(f.message for f in errors) + f" -> corrected copy in {fixed}")
        actions, _ = self._timed("base", lambda: doctor.fix(src, fixed))
        for a in actions:
            self.log(f"[base] fixed: {a}")

    def stage_synth(self) -> None:
        if self.synth_file.is_file():
            self.log(f"[synth] {self.synth_file} exists: skipped")
            return
        from consistbench.benchmark.variants.paraphrase import make_paraphraser
        from consistbench.reference_method.synth import default_train_file, synthesize_file

        s = dict(self.preset.synth)
        backend, pmodel = s.pop("paraphraser", "local_lm"), s.pop("paraphrase_model", None)
        if backend == "local_lm" and pmodel is None and self.preset.model:
            pmodel = str(self.source_model())  # paraphrases from the base model itself (paper preset)
        paraphraser = make_paraphraser(backend, model=pmodel) if "paraphrase" in s["types"] else None

        def run():
            t0 = time.monotonic()
            # a line per variant type: the stage takes minutes on CPU and has no finer-grained step
            stats = synthesize_file(default_train_file(), self.synth_file, paraphraser=paraphraser, **s,
                                    progress=lambda kind, n: self.log(f"[synth] {kind}: candidates for {n} "
                                                                      f"questions ({time.monotonic() - t0:.0f} s)"))
            self.log(f"[synth] {stats.originals} originals, variants {stats.variants}, "
                     f"{stats.duplicates} duplicates dropped")

        self._timed("synth", run)

    @property
    def train_file(self) -> Path:
        return self.dir / "synth" / "train.jsonl"

    @property
    def train_all_file(self) -> Path:
        return self.dir / "synth" / ("train_all.jsonl" if self.preset.all_data_questions else "train.jsonl")

    def stage_select(self) -> None:
        if self.train_file.is_file() and self.train_all_file.is_file():
            self.log(f"[select] {self.train_file} exists: skipped")
            return
        self._timed("select", self._select)

    def _select(self) -> None:
        import random

        from consistbench.benchmark.fileio import write_jsonl
        from consistbench.benchmark.schema import load_data
        from consistbench.reference_method import doctor
        from consistbench.reference_method.collator import encode_row

        n = self.preset.questions_per_type
        raw = [json.loads(line) for line in self.synth_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if n is None and self.preset.all_data_questions:
            raise ConsistbenchError("all_data_questions needs questions_per_type")
        rows = load_data(self.synth_file)
        tok = doctor.load_tokenizer(self.base_model())
        limit = self.preset.train.get("max_length", 1024)
        by_group: dict[str, list] = {}
        for r in rows:
            by_group.setdefault(r.group_id, []).append(r)
        fits = {g for g, rs in by_group.items()
                if max(len(encode_row(tok, r.context, r.question, r.reference)["input_ids"]) for r in rs) <= limit}
        if n is None:
            # every question with all its variants, whole groups that fit: triplets and rows then drop nothing,
            # so plain SFT (rows) and SFT + triplet train on exactly the same rows
            out = [r for r in raw if r["group_id"] in fits]
            write_jsonl(self.train_file, out)
            self.log(f"[select] every question: {len(fits)} groups, {len(out)} rows within {limit} tokens "
                     f"(of {len(by_group)} groups)")
            return
        keep: dict[str, set[str]] = {}  # group -> variant types kept
        counts = {}
        for t in SPECIALISED:
            cands = sorted(g for g in fits if any(r.variant_type == t for r in by_group[g]))
            chosen = random.Random(f"{self.preset.synth.get('seed', 0)}|{t}").sample(cands, min(n, len(cands)))
            counts[t] = len(chosen)
            for g in chosen:
                keep.setdefault(g, set()).add(t)
        short = {t: c for t, c in counts.items() if c < n}
        if short:
            raise ConsistbenchError(f"[select] too few synthetic questions within max_length={limit} tokens: "
                                    f"{short} (want {n} per type); raise the synth limit")
        out = [r for r in raw if r["group_id"] in keep
               and (r["variant_type"] == "original" or r["variant_type"] in keep[r["group_id"]])]
        if self.preset.all_data_questions:
            m = self.preset.all_data_questions
            rng = random.Random(f"{self.preset.synth.get('seed', 0)}|all")
            pick: dict[str, str] = {}  # group -> its one variant type, types in turn
            pools = {t: sorted(g for g, ts in keep.items() if t in ts) for t in SPECIALISED}
            for pool in pools.values():
                rng.shuffle(pool)
            while len(pick) < m and any(pools.values()):
                for t in SPECIALISED:
                    while pools[t] and pools[t][-1] in pick:
                        pools[t].pop()
                    if pools[t] and len(pick) < m:
                        pick[pools[t].pop()] = t
            if len(pick) < m:
                raise ConsistbenchError(f"[select] only {len(pick)} questions for the all-data models (want {m})")
            write_jsonl(self.train_all_file, [r for r in raw if r["group_id"] in pick
                                              and r["variant_type"] in ("original", pick[r["group_id"]])])
        write_jsonl(self.train_file, out)
        self.log(f"[select] {n} questions per type ({len(keep)} groups, {len(out)} rows) of {len(fits)} groups "
                 f"within {limit} tokens (of {len(by_group)})")

    def run_config(self, name: str, alpha: float, setting: dict | None = None):
        """The ConsistencyConfig of one training run: the preset's ``train``, then the search's chosen
        ``setting`` (its alpha only for SFT + triplet models), then the ``sft`` row's own fields."""
        setting = dict(setting or {})
        chosen_alpha = setting.pop("alpha", None)
        if alpha > 0 and chosen_alpha is not None:
            alpha = chosen_alpha
        if alpha == 0:  # no triplet term: its margin and pooling layer change nothing, so they are not set
            for key in TRIPLET_ONLY_KEYS:
                setting.pop(key, None)
        extra = dict(setting)
        if name == "sft":
            extra.update(examples=self.preset.sft_examples, **self.preset.sft_train)
        return self.train_config(alpha, extra)

    def train_config(self, alpha: float, extra: dict | None = None):
        from consistbench.reference_method.consistency_config import ConsistencyConfig

        fields = dict(self.preset.train, **(extra or {}))
        fields.update(alpha=alpha, disable_tqdm=not self.progress)
        try:
            return ConsistencyConfig(**fields)
        except (TypeError, ValueError) as exc:
            raise ConsistbenchError(f"preset {self.preset.name}: bad training setting ({exc})") from None

    def _train_one(self, key: str, out: Path, vtype: str, config) -> None:
        """Train one model into ``out`` (resuming from its checkpoints when there are some)."""
        from consistbench.reference_method import train as train_mod
        from consistbench.reference_method.triplets import MiningConfig

        ckpts = out.with_name(out.name + ".checkpoints")
        resume = train_mod.latest_checkpoint(ckpts) is not None
        self.log(f"[{key}] variant type {vtype}, alpha {config.alpha}, {config.examples}"
                 + (" (resuming)" if resume else ""))
        data = self.train_all_file if vtype == "all" else self.train_file
        self._timed(key, lambda: train_mod.train(self.base_model(), data, vtype, out, config,
                                                 MiningConfig(**self.preset.mining), resume=resume, log=self.log))
        if not (out / "consistbench_train.json").is_file():
            raise ConsistbenchError(f"[{key}] stopped before the end; run again to resume")

    def stage_train(self) -> None:
        setting = self.chosen_setting()
        for name, vtype, alpha in training_runs(self.preset):
            if self.only is not None and name not in self.only:
                continue
            out = self.model_dir(name)
            if (out / "consistbench_train.json").is_file():
                self.log(f"[train {name}] {out} exists: skipped")
                continue
            self._train_one(f"train {name}", out, vtype, self.run_config(name, alpha, setting))

    # -- the search on dev (presets with a search_grid) ----------------------------------------
    @property
    def search_dir(self) -> Path:
        return self.dir / "search"

    def chosen_setting(self) -> dict | None:
        """The setting the search chose (None for a preset without a search); refuses to guess before it ran."""
        if not self.preset.search_grid:
            return None
        path = self.search_dir / "chosen.json"
        if not path.is_file():
            raise ConsistbenchError(f"[train] {path}: no chosen setting yet (run the search stage first)")
        return json.loads(path.read_text(encoding="utf-8"))["setting"]

    @staticmethod
    def _read_records(path: Path) -> list[dict]:
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def _append_record(self, path: Path, record: dict) -> None:
        from consistbench.benchmark.fileio import write_jsonl

        write_jsonl(path, [*self._read_records(path), record])  # the whole file, atomically

    def _dev_score(self, key: str, model: Path, folder: Path) -> dict:
        """EM and RS of ``model`` on the search task (evaluated once; the results are reused on a rerun)."""
        from consistbench.benchmark.evaluate import task_metrics

        self._evaluate(key, model, folder, self.preset.search_task)
        doc = json.loads(self.results_file(folder).read_text(encoding="utf-8"))
        m = task_metrics(doc, self.preset.search_task)
        em, rs = float(m["em"]), float(m["rs"])
        return {"task": self.preset.search_task, "em": em, "rs": rs, "score": (em + rs) / 2,
                "results_file": str(self.results_file(folder))}

    def stage_search(self) -> None:
        grid = self.preset.search_grid
        if not grid:
            self.log("[search] no search grid in this preset: skipped")
            return
        chosen_file, records_file = self.search_dir / "chosen.json", self.search_dir / "search.jsonl"
        if chosen_file.is_file():
            self.log(f"[search] {chosen_file} exists: skipped")
            return
        import shutil

        from consistbench.benchmark.fileio import write_json

        done = {json.dumps(r["setting"], sort_keys=True) for r in self._read_records(records_file)}
        for i, setting in enumerate(grid):
            sid = f"s{i}"
            if json.dumps(setting, sort_keys=True) in done:
                self.log(f"[search {sid}] scored already: skipped")
                continue
            model = self.search_dir / "models" / sid
            if not (model / "consistbench_train.json").is_file():
                self._train_one(f"search {sid} train", model, "all",
                                self.run_config("sft_triplet_all", self.preset.triplet_alpha, setting))
            score = self._dev_score(f"search {sid} eval", model, self.search_dir / "eval" / sid)
            record = {"id": sid, "setting": setting, **score, "model": str(model)}
            self._append_record(records_file, record)
            self.log(f"[search {sid}] {setting}: dev EM {score['em']:.4f}, RS {score['rs']:.4f}")
        records = [r for r in self._read_records(records_file)
                   if json.dumps(r["setting"], sort_keys=True) in {json.dumps(s, sort_keys=True) for s in grid}]
        best = choose_setting(records, self.preset.train)
        search_chart(records, best, self.search_dir / "search.png")
        # the chosen model *is* the all-data SFT + triplet model (same base, data and settings): keep it
        target, src = self.model_dir("sft_triplet_all"), Path(best["model"])
        if not (target / "consistbench_train.json").is_file() and (src / "consistbench_train.json").is_file():
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            src.rename(target)
        write_json(chosen_file, {"id": best["id"], "setting": best["setting"], "task": best["task"],
                                 "em": best["em"], "rs": best["rs"], "score": best["score"],
                                 "rule": "highest dev mean of EM and RS; ties: fewer steps, then grid order"})
        shutil.rmtree(self.search_dir / "models", ignore_errors=True)  # the others are reproducible from the grid
        self.log(f"[search] chosen {best['id']} {best['setting']} (dev EM+RS mean {best['score']:.4f})")

    def specialised(self) -> list[Path]:
        return [self.model_dir(f"sft_triplet_{t}") for t in SPECIALISED]

    def stage_weights(self) -> None:
        if self.weights_file.is_file():
            self.log(f"[weights] {self.weights_file} exists: skipped")
            return
        from consistbench.reference_method.consistency_weights import DEFAULT_DEV, compute_weights, options_from, write_weights

        options = options_from(**self.preset.weights)

        sims = self.similarities_file if self.preset.temperatures else None

        def run():
            doc = compute_weights(self.base_model(), self.specialised(), DEFAULT_DEV, options,
                                  labels=list(SPECIALISED), log=self.log, similarities_out=sims)
            write_weights(doc, self.weights_file, self.weights_file.with_suffix(".png"))
            self.log(f"[weights] {spread_summary(doc)}")

        self._timed("weights", run)

    @property
    def similarities_file(self) -> Path:
        return self.dir / "weights" / "similarities.npz"

    def merge_config(self, weights_file: Path):
        from consistbench.reference_method.merge import MergeConfig

        return MergeConfig.from_dict({
            "method": "consistency", "base": str(self.base_model()),
            "models": [{"path": str(p), "name": t} for p, t in zip(self.specialised(), SPECIALISED)],
            "parameters": {"weights_file": str(weights_file), **self.preset.merge},
        }, where=f"preset {self.preset.name} merge")

    def stage_merge(self) -> None:
        out = self.model_dir("merged")
        if (out / "config.json").is_file():
            self.log(f"[merge] {out} exists: skipped")
            return
        from consistbench.reference_method.merge import merge

        cfg = self.merge_config(self.weights_file)
        from consistbench.benchmark.fileio import write_text

        write_text(self.dir / "merge.yaml", cfg.to_yaml())
        self._timed("merge", lambda: merge(cfg, out, log=self.log))

    def stage_temperature(self) -> None:
        """Merge with each of the preset's weights temperatures (the similarities are reused, no model runs
        again), score each merged candidate on the search task, and install the best as ``models/merged``."""
        temps = self.preset.temperatures
        if not temps:
            self.log("[temperature] no temperatures in this preset: skipped")
            return
        from consistbench.benchmark.fileio import write_json, write_text

        chosen_file, records_file = self.search_dir / "temperature_chosen.json", self.search_dir / "temperature.jsonl"
        if not chosen_file.is_file():
            from consistbench.reference_method.consistency_weights import (
                DEFAULT_DEV,
                compute_weights,
                options_from,
                write_weights,
            )
            from consistbench.reference_method.merge import merge

            if not self.similarities_file.is_file():
                raise ConsistbenchError(f"[temperature] {self.similarities_file}: missing (the weights stage keeps "
                                        "it; remove weights/ and run the weights stage again)")
            done = {float(r["temperature"]) for r in self._read_records(records_file)}
            for t in temps:
                if float(t) in done:
                    self.log(f"[temperature {t:g}] scored already: skipped")
                    continue
                cand = self.search_dir / "temperature" / f"t{t:g}"
                wfile, model = cand / "weights.json", cand / "model"
                if not wfile.is_file():
                    options = options_from(**{**self.preset.weights, "temperature": t})
                    doc = compute_weights(self.base_model(), self.specialised(), DEFAULT_DEV, options,
                                          labels=list(SPECIALISED), similarities_in=self.similarities_file)
                    write_weights(doc, wfile, wfile.with_suffix(".png"))
                    self.log(f"[temperature {t:g}] {spread_summary(doc)}")
                if not (model / "config.json").is_file():
                    self._timed(f"temperature {t:g} merge", lambda w=wfile, m=model: merge(self.merge_config(w), m, log=self.log))
                score = self._dev_score(f"temperature {t:g} eval", model, cand / "eval")
                self._append_record(records_file, {"temperature": t, **score, "weights_file": str(wfile),
                                                   "model": str(model)})
                self.log(f"[temperature {t:g}] dev EM {score['em']:.4f}, RS {score['rs']:.4f}")
            records = [r for r in self._read_records(records_file) if float(r["temperature"]) in {float(t) for t in temps}]
            # the highest dev mean of EM and RS; a tie goes to the temperature listed first
            best = min(enumerate(records), key=lambda ir: (-ir[1]["score"], ir[0]))[1]
            write_json(chosen_file, {k: best[k] for k in ("temperature", "task", "em", "rs", "score", "weights_file",
                                                          "model")}
                       | {"rule": "highest dev mean of EM and RS; ties: the earlier temperature of the list"})
        best = json.loads(chosen_file.read_text(encoding="utf-8"))
        src, final = Path(best["model"]), self.model_dir("merged")
        if (src / "config.json").is_file():  # install it (once; a rerun after a crash finishes the move)
            import shutil

            old = final.with_name("merged.replaced")
            shutil.rmtree(old, ignore_errors=True)
            if final.exists():
                final.rename(old)
            src.rename(final)
            shutil.rmtree(old, ignore_errors=True)
            write_text(self.dir / "merge.yaml", self.merge_config(Path(best["weights_file"])).to_yaml())
        self.log(f"[temperature] models/merged: temperature {best['temperature']:g} "
                 f"(dev EM+RS mean {best['score']:.4f})")

    @staticmethod
    def results_file(folder: Path) -> Path | None:
        found = sorted(folder.glob("*/results_*.json"))
        return found[-1] if found else None

    def eval_device(self) -> str | None:
        if self.preset.eval_device == "train":
            return "cpu" if self.preset.train.get("use_cpu") else "cuda"
        return self.preset.eval_device

    def _evaluate(self, key: str, path: Path, folder: Path, task: str) -> None:
        """lm-eval on one task through the default generation backend (skipped when results exist)."""
        from consistbench.benchmark import evaluate

        if self.results_file(folder):
            self.log(f"[{key}] {folder} exists: skipped")
            return
        opts = evaluate.EvalOptions(model_args=f"pretrained={path},dtype=float32", tasks=(task,),
                                    output_path=str(folder), batch_size=self.preset.eval_batch_size,
                                    device=self.eval_device())
        self.log(f"[{key}] {path} on {task}")
        self._timed(key, lambda: evaluate.run_eval(opts))

    def stage_eval(self) -> None:
        for name, path in self.models_to_eval().items():
            if self.only is not None and name not in self.only:
                continue
            folder = self.eval_dir(name)
            if self.results_file(folder):
                self.log(f"[eval {name}] {folder} exists: skipped")
                continue
            if not (path / "config.json").is_file():
                if self.allow_missing:
                    self.log(f"[eval {name}] {path}: no model yet, left out (--allow-missing)")
                    continue
                raise ConsistbenchError(f"[eval {name}] {path}: no model (run the earlier stages)")
            self._evaluate(f"eval {name}", path, folder, self.preset.task)

    def collect(self) -> list[dict]:
        """One row per evaluated model: label, metrics, the results file."""
        from consistbench.benchmark.evaluate import task_metrics

        rows = []
        for name in self.models_to_eval():
            res = self.results_file(self.eval_dir(name))
            if res is None and self.allow_missing and name != "base":
                self.log(f"[table] no results for {name}: left out (--allow-missing)")
                continue
            if res is None:
                raise ConsistbenchError(f"[table] no results for {name} under {self.eval_dir(name)}")
            doc = json.loads(res.read_text(encoding="utf-8"))
            m = task_metrics(doc, self.preset.task)
            rows.append({"model": name, "label": ROW_LABELS.get(name, name),
                         "metrics": {k: float(m[k]) for k, _ in TABLE_METRICS if k in m},
                         "results_file": str(res)})
        return rows

    def stage_table(self) -> dict:
        from consistbench.benchmark.fileio import write_json, write_text

        rows = self.collect()
        base = rows[0]["metrics"]
        missing = [n for n in self.models_to_eval() if n not in {r["model"] for r in rows}]
        doc = {"format": "consistbench-reproduction", "version": 1, "preset": self.preset.name, "missing": missing,
               "task": self.preset.task, "base_model": str(self.base_model()), "rows": rows,
               "delta_vs_base": {r["model"]: {k: round(r["metrics"][k] - base[k], 4) for k in r["metrics"] if k in base}
                                 for r in rows[1:]},
               "timings_s": self.timings()}
        for key, name in (("search", "chosen.json"), ("temperature", "temperature_chosen.json")):
            path = self.search_dir / name
            if path.is_file():  # what was chosen on dev, for the reader of the table
                doc[f"{key}_chosen"] = json.loads(path.read_text(encoding="utf-8"))
        if self.preset.paired:
            doc["paired"] = self.paired_comparisons(rows)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.results_dir / "results.json", doc)
        write_text(self.results_dir / "results.md", markdown_table(doc))
        bar_chart(doc, self.results_dir / "results.png")
        print_table(doc)
        self.log(f"[table] wrote {self.results_dir}/results.md, .json, .png")
        return doc

    def paired_comparisons(self, rows: list[dict]) -> list[dict]:
        """Merged minus base, SFT and the best specialised model: ``consistbench compare``'s paired
        bootstrap over the shared groups (difference, 95% interval, p) for EM, RS and BS.

        The best specialised model is the one with the highest mean of EM and RS in this table (no dev
        score exists for the specialised models): choosing the strongest opponent on the test itself can
        only make the merged model's comparison harder, never easier."""
        from consistbench.benchmark.compare_cli import compare, load_side

        by_name = {r["model"]: r for r in rows}
        if "merged" not in by_name:
            return []
        spec = [by_name[f"sft_triplet_{t}"] for t in SPECIALISED if f"sft_triplet_{t}" in by_name]
        others = [n for n in ("base", "sft") if n in by_name]
        if spec:
            best = max(spec, key=lambda r: (r["metrics"].get("em", 0.0) + r["metrics"].get("rs", 0.0)) / 2)
            others.append(best["model"])
        merged = load_side(self.eval_dir("merged"), self.preset.task)
        out = []
        for name in others:
            result = compare(merged, load_side(self.eval_dir(name), self.preset.task))
            out.append({"a": "merged", "b": name, "b_label": ROW_LABELS.get(name, name),
                        "why": "best specialised (EM+RS mean in this table)" if name.startswith("sft_triplet_") else "",
                        "shared_groups": result["shared_groups"], "settings": result["settings"],
                        "metrics": {k: {f: result["metrics"][k][f] for f in
                                        ("a", "b", "difference", "low", "high", "p_value", "significant")}
                                    for k in PAIRED_METRICS if k in result["metrics"]}})
        return out

    def run(self, stages: tuple[str, ...] = STAGES) -> dict | None:
        self.source_model()  # fail early (paper preset without --model), before creating the run directory
        self._record()
        for stage in stages:
            getattr(self, f"stage_{stage}")()
        return None


# ---------------------------------------------------------------------------------------------
# presentation

def markdown_table(doc: dict) -> str:
    """The paper's layout: one column per model, one row per metric (ROUGE-L, BLEU, EM, RS, BS)."""
    rows = doc["rows"]
    lines = [f"Task `{doc['task']}`, preset `{doc['preset']}`, base `{Path(doc['base_model']).name}`.", "",
             "| metric | " + " | ".join(r["label"] for r in rows) + " |",
             "|---|" + "---:|" * len(rows)]
    for key, label in TABLE_METRICS:
        vals = [r["metrics"].get(key) for r in rows]
        best = max((v for v in vals if v is not None), default=None)
        cells = ["-" if v is None else (f"**{v:.4f}**" if v == best else f"{v:.4f}") for v in vals]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if doc.get("missing"):
        lines += ["", "Not evaluated (run not finished): " + ", ".join(ROW_LABELS.get(m, m) for m in doc["missing"]) + "."]
    if doc.get("search_chosen") or doc.get("temperature_chosen"):
        chosen = []
        if doc.get("search_chosen"):
            c = doc["search_chosen"]
            chosen.append(", ".join(f"{k} {v:g}" for k, v in c["setting"].items()) + f" ({c['id']})")
        if doc.get("temperature_chosen"):
            chosen.append(f"weights temperature {doc['temperature_chosen']['temperature']:g}")
        task = (doc.get("search_chosen") or doc["temperature_chosen"])["task"]
        lines += ["", f"Chosen on `{task}`: " + "; ".join(chosen) + "."]
    if doc.get("paired"):
        first = doc["paired"][0]["settings"]
        lines += ["", (f"Paired comparisons (`consistbench compare`: bootstrap over shared groups, "
                       f"{first['n_resamples']} resamples, seed {first['seed']}): merged minus the other model, "
                       f"{first['confidence']:.0%} interval, p."), "",
                  "| merged vs | groups | metric | merged | other | difference | interval | p |",
                  "|---|---:|---|---:|---:|---:|---|---:|"]
        for c in doc["paired"]:
            for k, m in c["metrics"].items():
                lines.append(f"| {c['b_label']} | {c['shared_groups']} | {k.upper()} | {m['a']:.4f} | {m['b']:.4f} | "
                             f"{m['difference']:+.4f} | {m['low']:+.4f} .. {m['high']:+.4f} | {m['p_value']:.3f} |")
    return "\n".join(lines) + "\n"


def search_chart(records: list[dict], best: dict, path: Path) -> Path:
    """The dev curves of the search: EM and RS of each setting (the chosen one marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from consistbench.benchmark.fileio import atomic_path

    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(records)), 4.2), constrained_layout=True)
    xs = list(range(len(records)))
    ax.plot(xs, [r["em"] for r in records], "o-", label="EM")
    ax.plot(xs, [r["rs"] for r in records], "s-", label="RS")
    i = next(j for j, r in enumerate(records) if r["id"] == best["id"])
    ax.axvline(i, color="grey", linestyle=":", label=f"chosen ({best['id']})")
    short = {"learning_rate": "lr", "max_steps": "steps", "num_train_epochs": "ep", "alpha": "a", "margin": "m",
             "pooling_layer": "L"}
    ax.set_xticks(xs, [r["id"] + "\n" + "\n".join(f"{short.get(k, k)} {v:g}" for k, v in r["setting"].items())
                       for r in records], fontsize=7)
    ax.set_ylabel(f"score on {records[0]['task']}")
    ax.set_title("search on dev: SFT + triplet (all data) per setting")
    ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def print_table(doc: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"reproduction ({doc['preset']}, {doc['task']})")
    table.add_column("model")
    for _, label in TABLE_METRICS:
        table.add_column(label, justify="right")
    for r in doc["rows"]:
        table.add_row(r["label"], *[f"{r['metrics'][k]:.4f}" if k in r["metrics"] else "-" for k, _ in TABLE_METRICS])
    Console().print(table)


def bar_chart(doc: dict, path: Path) -> Path:
    """Grouped bars: metrics on the x axis, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from consistbench.benchmark.fileio import atomic_path

    rows = doc["rows"]
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(TABLE_METRICS) * len(rows) / 4), 4.5), constrained_layout=True)
    width = 0.85 / len(rows)
    for j, r in enumerate(rows):
        xs = [i + (j - (len(rows) - 1) / 2) * width for i in range(len(TABLE_METRICS))]
        ax.bar(xs, [r["metrics"].get(k, float("nan")) for k, _ in TABLE_METRICS], width, label=r["label"])
    ax.set_xticks(range(len(TABLE_METRICS)), [label for _, label in TABLE_METRICS])
    ax.set_ylim(0, 1.0)
    ax.set_title(f"consistbench reproduction: {doc['preset']} on {doc['task']}")
    ax.legend(fontsize=7, ncol=2)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# CLI

def default_run_dir(preset: str) -> Path:
    from consistbench.benchmark.paths import cache_dir

    return cache_dir() / "runs" / preset


def parse_extra(values: list[str] | None) -> dict[str, str]:
    out = {}
    for v in values or []:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise ConsistbenchError(f"--extra-model {v!r}: expected NAME=DIR")
        if name in out:
            raise ConsistbenchError(f"--extra-model {name}: given twice")
        out[name] = str(Path(path).expanduser().resolve())
    return out


def cmd_reproduce(args) -> int:
    preset = PRESETS[args.preset]
    if args.show_preset:
        print(json.dumps(asdict(preset), indent=2))
        return 0
    stages = STAGES
    if args.stages:
        stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
        bad = [s for s in stages if s not in STAGES]
        if bad:
            raise ConsistbenchError(f"--stages: unknown stage {bad[0]!r} (expected {', '.join(STAGES)})")
    run = Run(preset, args.output or default_run_dir(args.preset), model=args.model,
              extra_models=parse_extra(args.extra_model), progress=args.progress, allow_missing=args.allow_missing,
              only={n.strip() for n in args.only.split(",") if n.strip()} if args.only else None)
    run.run(stages)
    return 0


def register(ref_sub: argparse._SubParsersAction) -> None:
    from consistbench.benchmark.cli import add_output_option

    p = ref_sub.add_parser("reproduce", help="the paper's table end to end: synth, (search), train, weights, merge, eval, table",
                           description="Resumable: a stage whose output exists is skipped; run again after a crash.")
    p.add_argument("--preset", required=True, choices=sorted(PRESETS))
    add_output_option(p, required=False, metavar="RUN_DIR",
                      help="run folder where every output goes (default: <cache>/runs/PRESET)")
    p.add_argument("--model", default=None, help="base model folder (cpu, cpu-mini: embedded SmolLM2; paper: required)")
    p.add_argument("--extra-model", action="append", metavar="NAME=DIR",
                   help="an already-trained model to evaluate and add as a row (repeatable)")
    p.add_argument("--stages", default=None, help=f"comma-separated subset of {','.join(STAGES)} (default: all)")
    p.add_argument("--only", default=None, metavar="NAMES",
                   help="train and eval only these models (comma-separated, e.g. base,merged)")
    p.add_argument("--show-preset", action="store_true", help="print the preset's settings as JSON and exit")
    p.add_argument("--progress", action="store_true", help="progress bars during training")
    p.add_argument("--allow-missing", action="store_true",
                   help="eval and table: leave out models not trained yet (a partial table) instead of failing")
    p.set_defaults(func=cmd_reproduce)
