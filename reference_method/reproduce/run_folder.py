"""The run folder of a reproduction: where each stage's output goes, and its bookkeeping.

Everything a run writes lives under one folder (``-o RUN_DIR``)::

    run.json            the preset the folder was started with (another preset is refused)
    timings.json        wall time per stage and per model
    base/               the doctor's corrected copy of the base model, when one is needed
    synth/              synth.jsonl, train.jsonl (train_all.jsonl, train_dose.jsonl)
    search/             the dev searches: records (*.jsonl), choices (*chosen.json), candidates
    models/<name>/      every trained or merged model (``name@sN``: trained with seed N)
    models/<name>.adapter/, <name>.card.json   a LoRA model's adapter and card: enough to rebuild it
    weights/            weights.json (+ .png), similarities.npz (``@sN``: per seed)
    eval/<name>/        lm-eval's results per model
    launch/             the launched jobs' settings files (and, on several machines, jobs.jsonl)
    budgets.json        each trained arm's updates, sequences and tokens
    results/            results.json, .md, .png

Resumability is by files: a stage is done when its output exists, a model when its card
(``consistbench_train.json``) or ``config.json`` does, a dev candidate when its line is in the
records file. Every file is written atomically, so a crash leaves either the old state or the new.
A LoRA model whose folder is gone (a new machine, a new session) is rebuilt from its adapter and card.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from consistbench.benchmark.embedded import model_or_smollm2
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import write_json, write_jsonl
from consistbench.reference_method.reproduce.launch import JobBoard, Launcher, run_command
from consistbench.reference_method.reproduce.presets import (
    DEFAULT_SEEDED_ARMS,
    NULL_MERGES,
    ROW_LABELS,
    SEARCH_KEYS,
    SPECIALISED,
    TRIPLET_SEARCH_KEYS,
    Preset,
    arm_of,
    arm_seeds,
    seeded,
)
from consistbench.reference_method.save import CARD_NAME


def trained(folder: Path) -> bool:
    """Whether ``folder`` holds a finished trained model (its card is written last)."""
    return (folder / CARD_NAME).is_file()


def results_file(folder: Path) -> Path | None:
    """The newest lm-eval results file under an evaluation folder (None before it ran)."""
    found = sorted(folder.glob("*/results_*.json"))
    return found[-1] if found else None


def read_records(path: Path) -> list[dict]:
    """The records of a JSON-lines file (none when it does not exist yet)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def append_record(path: Path, record: dict) -> None:
    """Add one record to a JSON-lines file (the whole file rewritten atomically)."""
    write_jsonl(path, [*read_records(path), record])


class Run:
    """One run folder: the preset, the options of this invocation, every output's path, run.json
    and timings.json."""

    def __init__(self, preset: Preset, run_dir: str | Path, *, model: str | None = None,
                 extra_models: dict[str, str] | None = None, log: Callable[[str], None] = print,
                 progress: bool = False, allow_missing: bool = False, only: set[str] | None = None,
                 launcher: Launcher | None = None):
        self.preset = copy.deepcopy(preset)
        self.launcher = launcher or Launcher()
        if model is not None:
            self.preset.model = str(Path(model).expanduser().resolve())
        self.dir = Path(run_dir).expanduser()
        self.extra = dict(extra_models or {})
        self.log = log
        self.progress = progress
        self.allow_missing = allow_missing
        self.only = set(only) if only else None  # train/eval just these models (e.g. the merge's inputs first)
        check_preset(self.preset)
        known = set(self.model_names())
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

    @property
    def train_file(self) -> Path:
        return self.dir / "synth" / "train.jsonl"

    @property
    def train_all_file(self) -> Path:
        return self.dir / "synth" / ("train_all.jsonl" if self.preset.all_data_questions else "train.jsonl")

    def model_dir(self, name: str) -> Path:
        return self.dir / "models" / name

    @property
    def search_dir(self) -> Path:
        return self.dir / "search"

    @property
    def dose_file(self) -> Path:
        return self.dir / "synth" / "train_dose.jsonl"

    @property
    def weights_file(self) -> Path:
        return self.dir / "weights" / "weights.json"

    @property
    def similarities_file(self) -> Path:
        return self.dir / "weights" / "similarities.npz"

    def seed_file(self, path: Path, seed: int) -> Path:
        """``path`` of the models trained with ``seed`` (``weights@s1.json``); the first seed's is ``path``."""
        return path if seed == self.preset.seeds[0] else path.with_name(f"{path.stem}@s{seed}{path.suffix}")

    def eval_dir(self, name: str) -> Path:
        return self.dir / "eval" / name

    @property
    def results_dir(self) -> Path:
        return self.dir / "results"

    # -- models -----------------------------------------------------------------------------
    def base_model(self) -> Path:
        """The base every stage uses: the doctor's corrected copy when one was needed."""
        fixed = self.dir / "base"
        return fixed if (fixed / "config.json").is_file() else self.source_model()

    def source_model(self) -> Path:
        """The base model as given (``--model``, or the embedded SmolLM2)."""
        if self.preset.model:
            return Path(self.preset.model)
        if self.preset.name.startswith("paper"):
            raise ConsistbenchError(f"preset {self.preset.name}: pass the base model's local folder with --model "
                                    "(e.g. a downloaded meta-llama/Llama-3.1-8B-Instruct); nothing is downloaded")
        return Path(model_or_smollm2(None))

    def specialised(self, seed: int | None = None) -> list[Path]:
        """The specialised models (of ``seed``), the merge's inputs, in :data:`SPECIALISED` order."""
        seed = self.preset.seeds[0] if seed is None else seed
        return [self.model_dir(seeded(f"sft_triplet_{t}", seed, self.preset)) for t in SPECIALISED]

    def arms(self) -> list[str]:
        """Every row of the table in the paper's order: base, SFT (dose-matched, ablation), SFT + triplet,
        specialised, merged, the null merges."""
        out = ["base", "sft"] + (["sft_dose"] if self.preset.sft_dose else [])
        out += (["sft_triplet_expanded"] if self.preset.sft_ablation else [])
        return out + ["sft_triplet_all", *(f"sft_triplet_{t}" for t in SPECIALISED), "merged",
                      *self.preset.null_merges]

    def model_names(self) -> list[str]:
        """Every model of the table: each arm once per seed (:meth:`arms` order), then the extras."""
        names = [seeded(arm, s, self.preset) for arm in self.arms() for s in arm_seeds(arm, self.preset)]
        return names + list(self.extra)

    def models_to_eval(self) -> dict[str, Path]:
        """:meth:`model_names` with their folders."""
        out = {"base": self.base_model()}
        out.update({n: self.model_dir(n) for n in self.model_names()[1:] if n not in self.extra})
        out.update({k: Path(v) for k, v in self.extra.items()})
        return out

    def eval_device(self) -> str | None:
        """The device lm-eval runs on: ``"train"`` in the preset means the training device."""
        if self.preset.eval_device == "train":
            return "cpu" if self.preset.train.get("use_cpu") else "cuda"
        return self.preset.eval_device

    # -- bookkeeping ------------------------------------------------------------------------
    def record(self) -> None:
        """Create the folder and write ``run.json``; refuse a folder started with other settings."""
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

    def launch(self, argv: list[str], *, module: bool = False, env: dict | None = None) -> None:
        """Run one job under the launcher (on several machines, posted for the other machines first)."""
        board = JobBoard(self.dir) if self.launcher.settings()["num_machines"] > 1 else None
        n = board.post(argv, module=module, env=env) if board else None
        run_command(self.launcher.command(argv, module=module), self.log, env)
        if board:
            board.done(n)

    def timings(self) -> dict:
        """Seconds per timed step so far (``timings.json``)."""
        path = self.dir / "timings.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def timed(self, key: str, fn: Callable[[], object]):
        """Run ``fn``, record its wall time as ``key`` in ``timings.json`` and log it."""
        t0 = time.perf_counter()
        out = fn()
        data = self.timings()
        data[key] = round(time.perf_counter() - t0, 1)
        write_json(self.dir / "timings.json", data)
        self.log(f"[{key}] done in {time.perf_counter() - t0:.0f} s")
        return out


def check_preset(preset: Preset) -> None:
    """Refuse a preset whose settings contradict each other (one line naming the setting)."""
    where = f"preset {preset.name}"
    for i, setting in enumerate(preset.search_grid):
        bad = sorted(set(setting) - set(SEARCH_KEYS))
        if bad:
            raise ConsistbenchError(f"{where}: search setting {i} sets {bad[0]!r} "
                                    f"(a setting may set {', '.join(SEARCH_KEYS)})")
        if preset.epochs is not None and {"max_steps", "num_train_epochs"} & set(setting):
            raise ConsistbenchError(f"{where}: search setting {i} sets the training length, but epochs "
                                    f"{preset.epochs:g} fixes it for every arm")
    dev_choices = preset.search_grid or preset.triplet_search or preset.temperatures or preset.ta_scales \
        or preset.eval_checkpoints or len(preset.weights_distances) > 1
    if dev_choices and preset.search_task == preset.task:
        raise ConsistbenchError(f"{where}: the search scores on {preset.task}, "
                                "the task of the table; settings are chosen on a dev task only")
    if not preset.seeds or len(set(preset.seeds)) != len(preset.seeds):
        raise ConsistbenchError(f"{where}: seeds must be distinct and at least one, got {preset.seeds}")
    arms = {*DEFAULT_SEEDED_ARMS, "sft_triplet_expanded", "sft_dose"}
    if set(preset.seeded_arms) - arms:
        raise ConsistbenchError(f"{where}: seeded_arms names {sorted(set(preset.seeded_arms) - arms)[0]!r} "
                                f"(expected some of {', '.join(sorted(arms))})")
    if set(preset.null_merges) - set(NULL_MERGES):
        raise ConsistbenchError(f"{where}: null_merges names {sorted(set(preset.null_merges) - set(NULL_MERGES))[0]!r} "
                                f"(expected {', '.join(NULL_MERGES)})")
    if ("task_arithmetic" in preset.null_merges) != bool(preset.ta_scales):
        raise ConsistbenchError(f"{where}: the task_arithmetic row and ta_scales go together (its scale is chosen on dev)")
    if any(not 0 < f <= 1 for f in preset.eval_checkpoints):
        raise ConsistbenchError(f"{where}: eval_checkpoints are fractions of the training steps, in (0, 1]")
    if preset.eval_checkpoints and arm_of(preset.checkpoint_arm) not in arms:
        raise ConsistbenchError(f"{where}: checkpoint_arm {preset.checkpoint_arm!r} is not a trained arm")
    bad = sorted(set(preset.triplet_search) - set(TRIPLET_SEARCH_KEYS))
    if bad:
        raise ConsistbenchError(f"{where}: triplet_search sets {bad[0]!r} (expected some of "
                                f"{', '.join(TRIPLET_SEARCH_KEYS)})")
    if preset.eval_groups is not None and preset.eval_groups < 2:
        raise ConsistbenchError(f"{where}: eval_groups must be at least 2")
    if preset.sft_dose and (preset.epochs is None or preset.sft_examples != "rows"):
        raise ConsistbenchError(f"{where}: sft_dose matches the specialists' sequences per epoch: it needs epochs "
                                "(the same for every arm) and sft_examples 'rows'")
    if preset.eval_checkpoints and any(abs(f / min(preset.eval_checkpoints) - round(f / min(preset.eval_checkpoints)))
                                       > 1e-9 for f in preset.eval_checkpoints):
        raise ConsistbenchError(f"{where}: eval_checkpoints must be multiples of the smallest (checkpoints are saved "
                                "at every multiple of it)")
    if preset.equivalence_margin is not None and not 0 < preset.equivalence_margin < 1:
        raise ConsistbenchError(f"{where}: equivalence_margin must be in (0, 1)")
