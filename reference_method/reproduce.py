"""``consistbench ref reproduce --preset cpu-mini|paper``: the paper's table, end to end.

Stages (each writes its output atomically and is skipped when that output already exists, so a
crashed or interrupted run continues where it stopped; a half-trained model resumes from its
last checkpoint):

0. ``base``    -> ``base/`` only when ``consistbench doctor`` finds an error in the base model (e.g.
   SmolLM2's pad token is its eos token): the doctor's corrected copy, with the same weights,
   becomes the base of every later stage (training, weights, merge and the base row);
1. ``synth``   -> ``synth/synth.jsonl``: synthetic variants of train questions (:mod:`.synth`);
   ``select``  -> ``synth/train.jsonl``: with ``questions_per_type`` set, a seeded choice of that
   many questions per variant type among those whose longest training sequence fits
   ``max_length`` (so the count holds after the trainer's length filter); else every row. With
   ``all_data_questions`` set, also ``synth/train_all.jsonl`` for the all-data and SFT models:
   that many of the chosen questions, each with one variant, the types in equal shares (the
   same training budget as one specialised model); else those two train on the union;
2. ``train``   -> ``models/<name>/``: plain SFT (``alpha = 0``) on all data, SFT + triplet on all
   data (the all-data model), and one SFT + triplet model per variant type (:mod:`.train`);
3. ``weights`` -> ``weights/weights.json`` + heatmap: consistency weights of the specialised
   models on dev queries (:mod:`.consistency_weights`);
4. ``merge``   -> ``models/merged/``: ``theta_base + sum_k w_k^l delta_k^l`` (:mod:`.merge`);
5. ``eval``    -> ``eval/<name>/``: every model through lm-eval (:func:`consistbench.benchmark.evaluate.run_eval`);
6. ``table``   -> ``results/results.{md,json,png}``: ROUGE-L, BLEU, EM, RS, BS per model.

``--extra-model NAME=DIR`` adds already-trained models (e.g. preference-based fusion) as rows:
they are evaluated like the others. Wall time per stage is kept in ``timings.json``.

Presets (:data:`PRESETS`) hold every setting; ``run.json`` records the preset a run directory was
started with and a different one is refused (use another ``-o RUN_DIR``).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError

SPECIALISED = ("how_to", "plural_article", "paraphrase")
TABLE_METRICS = (("rougeL", "ROUGE-L"), ("bleu", "BLEU"), ("em", "EM"), ("rs", "RS"), ("bs", "BS"))
STAGES = ("base", "synth", "select", "train", "weights", "merge", "eval", "table")


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
}


def training_runs(preset: Preset) -> list[tuple[str, str, float]]:
    """(model name, variant type, alpha) of every model the train stage produces, in order."""
    # the specialised models first: weights and merge need only them
    return ([(f"sft_triplet_{t}", t, preset.triplet_alpha) for t in SPECIALISED]
            + [("sft_triplet_all", "all", preset.triplet_alpha), ("sft", "all", preset.sft_alpha)])


ROW_LABELS = {"base": "base", "sft": "SFT", "sft_triplet_all": "SFT + triplet (all data)",
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
        out = {"base": self.base_model(), "sft": self.model_dir("sft"),
               "sft_triplet_all": self.model_dir("sft_triplet_all")}
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
            before = json.loads(path.read_text(encoding="utf-8"))
            if before.get("preset") != json.loads(json.dumps(record["preset"])):
                changed = sorted(k for k, v in json.loads(json.dumps(record["preset"])).items()
                                 if before.get("preset", {}).get(k) != v)
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
        if n is None:
            if self.preset.all_data_questions:
                raise ConsistbenchError("all_data_questions needs questions_per_type")
            write_jsonl(self.train_file, raw)
            return
        rows = load_data(self.synth_file)
        tok = doctor.load_tokenizer(self.base_model())
        limit = self.preset.train.get("max_length", 1024)
        by_group: dict[str, list] = {}
        for r in rows:
            by_group.setdefault(r.group_id, []).append(r)
        fits = {g for g, rs in by_group.items()
                if max(len(encode_row(tok, r.context, r.question, r.reference)["input_ids"]) for r in rs) <= limit}
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

    def train_config(self, alpha: float):
        from consistbench.reference_method.consistency_config import ConsistencyConfig

        fields = dict(self.preset.train, alpha=alpha, disable_tqdm=not self.progress)
        try:
            return ConsistencyConfig(**fields)
        except (TypeError, ValueError) as exc:
            raise ConsistbenchError(f"preset {self.preset.name}: bad training setting ({exc})") from None

    def stage_train(self) -> None:
        from consistbench.reference_method.train import latest_checkpoint, train
        from consistbench.reference_method.triplets import MiningConfig

        for name, vtype, alpha in training_runs(self.preset):
            if self.only is not None and name not in self.only:
                continue
            out = self.model_dir(name)
            if (out / "consistbench_train.json").is_file():
                self.log(f"[train {name}] {out} exists: skipped")
                continue
            ckpts = out.with_name(out.name + ".checkpoints")
            resume = latest_checkpoint(ckpts) is not None
            self.log(f"[train {name}] variant type {vtype}, alpha {alpha}" + (" (resuming)" if resume else ""))
            data = self.train_all_file if vtype == "all" else self.train_file
            self._timed(f"train {name}", lambda: train(self.base_model(), data, vtype, out,
                                                       self.train_config(alpha), MiningConfig(**self.preset.mining),
                                                       resume=resume, log=self.log))
            if not (out / "consistbench_train.json").is_file():
                raise ConsistbenchError(f"[train {name}] stopped before the end; run again to resume")

    def specialised(self) -> list[Path]:
        return [self.model_dir(f"sft_triplet_{t}") for t in SPECIALISED]

    def stage_weights(self) -> None:
        if self.weights_file.is_file():
            self.log(f"[weights] {self.weights_file} exists: skipped")
            return
        from consistbench.reference_method.consistency_weights import DEFAULT_DEV, compute_weights, options_from, write_weights

        options = options_from(**self.preset.weights)

        def run():
            doc = compute_weights(self.base_model(), self.specialised(), DEFAULT_DEV, options,
                                  labels=list(SPECIALISED), log=self.log)
            write_weights(doc, self.weights_file, self.weights_file.with_suffix(".png"))

        self._timed("weights", run)

    def stage_merge(self) -> None:
        out = self.model_dir("merged")
        if (out / "config.json").is_file():
            self.log(f"[merge] {out} exists: skipped")
            return
        from consistbench.reference_method.merge import MergeConfig, merge

        cfg = MergeConfig.from_dict({
            "method": "consistency", "base": str(self.base_model()),
            "models": [{"path": str(p), "name": t} for p, t in zip(self.specialised(), SPECIALISED)],
            "parameters": {"weights_file": str(self.weights_file), **self.preset.merge},
        }, where=f"preset {self.preset.name} merge")
        from consistbench.benchmark.fileio import write_text

        write_text(self.dir / "merge.yaml", cfg.to_yaml())
        self._timed("merge", lambda: merge(cfg, out, log=self.log))

    @staticmethod
    def results_file(folder: Path) -> Path | None:
        found = sorted(folder.glob("*/results_*.json"))
        return found[-1] if found else None

    def stage_eval(self) -> None:
        from consistbench.benchmark.evaluate import EvalOptions, run_eval

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
            opts = EvalOptions(model_args=f"pretrained={path},dtype=float32", tasks=(self.preset.task,),
                               output_path=str(folder), batch_size=self.preset.eval_batch_size,
                               device="cpu" if self.preset.train.get("use_cpu") else "cuda")
            self.log(f"[eval {name}] {path} on {self.preset.task}")
            self._timed(f"eval {name}", lambda: run_eval(opts))

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
        self.results_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.results_dir / "results.json", doc)
        write_text(self.results_dir / "results.md", markdown_table(doc))
        bar_chart(doc, self.results_dir / "results.png")
        print_table(doc)
        self.log(f"[table] wrote {self.results_dir}/results.md, .json, .png")
        return doc

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
    return "\n".join(lines) + "\n"


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

    p = ref_sub.add_parser("reproduce", help="the paper's table end to end: synth, train, weights, merge, eval, table",
                           description="Resumable: a stage whose output exists is skipped; run again after a crash.")
    p.add_argument("--preset", required=True, choices=sorted(PRESETS))
    add_output_option(p, required=False, metavar="RUN_DIR",
                      help="run folder where every output goes (default: <cache>/runs/PRESET)")
    p.add_argument("--model", default=None, help="base model folder (cpu-mini: embedded SmolLM2; paper: required)")
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
