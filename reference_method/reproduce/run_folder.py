"""The run folder of a reproduction: where each stage's output goes, and its bookkeeping.

Everything a run writes lives under one folder (``-o RUN_DIR``)::

    run.json            the preset the folder was started with (another preset is refused)
    timings.json        wall time per stage and per model
    base/               the doctor's corrected copy of the base model, when one is needed
    synth/              synth.jsonl, train.jsonl (train_all.jsonl)
    search/             the dev searches: records (*.jsonl), choices (*chosen.json), candidates
    models/<name>/      every trained or merged model
    weights/            weights.json (+ .png), similarities.npz
    eval/<name>/        lm-eval's results per model
    results/            results.json, .md, .png

Resumability is by files: a stage is done when its output exists, a model when its card
(``consistbench_train.json``) or ``config.json`` does, a dev candidate when its line is in the
records file. Every file is written atomically, so a crash leaves either the old state or the new.
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
from consistbench.reference_method.reproduce.presets import ROW_LABELS, SEARCH_KEYS, SPECIALISED, Preset, training_runs
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
    def weights_file(self) -> Path:
        return self.dir / "weights" / "weights.json"

    @property
    def similarities_file(self) -> Path:
        return self.dir / "weights" / "similarities.npz"

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
        if self.preset.name == "paper":
            raise ConsistbenchError("preset paper: pass the base model's local folder with --model "
                                    "(e.g. a downloaded meta-llama/Llama-3.1-8B-Instruct); nothing is downloaded")
        return Path(model_or_smollm2(None))

    def specialised(self) -> list[Path]:
        """The specialised models, the merge's inputs, in :data:`SPECIALISED` order."""
        return [self.model_dir(f"sft_triplet_{t}") for t in SPECIALISED]

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
