"""``consistbench eval``: the main job. lm-eval through its Python API on the consistbench tasks.

- Only the consistbench task folder is indexed (``TaskManager(include_defaults=False)``), which
  skips lm-eval's ~14,700 built-in task files and most of its start-up time.
- The default model is the embedded SmolLM2 (``hf`` backend, chat template applied); any
  ``--model``/``--model-args`` lm-eval accepts works (hf, vllm, local-completions, ...).
- :class:`DedupLM` wraps the model so that a prompt requested by several tasks at once (the
  original of a group appears in every per-type task) is generated once.
- Outputs are lm-eval's own results JSON and samples JSONL (so plain ``lm_eval`` output and ours
  are interchangeable), plus ``report.png``. Everything is written into a temporary directory
  and moved into place only after the run succeeded: a failed run leaves no results file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consistbench.benchmark.compat import set_lm_eval_rank
from consistbench.benchmark.embedded import convert_smollm2
from consistbench.benchmark.errors import ConsistbenchError, DataVersionError
from consistbench.benchmark.gencache import GenerationCache, cache_hook_for, model_identity
from consistbench.benchmark.intervals import BootstrapSettings, MetricValues, add_to_lm_eval_results, bootstrap_metadata
from consistbench.benchmark.metrics import ScoreSettings
from consistbench.benchmark.paths import TASKS_DIR
from consistbench.benchmark.report import bar_chart, families_chart
from consistbench.benchmark.variants.template import describe, load_templates

DEFAULT_TASKS = ("consistency_mini",)


def tasks_path() -> Path:
    """The directory to pass to ``lm_eval --include_path``."""
    return TASKS_DIR


def is_samples_file(name: str, task: str) -> bool:
    """Whether ``name`` is lm-eval's samples file of ``task``: ``samples_<task>_<timestamp>.jsonl``.

    The timestamp starts with a digit, so ``consistency`` does not also match the samples of
    ``consistency_typo`` or ``consistency_e2e_bm25`` written by the same run."""
    prefix = f"samples_{task}_"
    return name.startswith(prefix) and name[len(prefix):len(prefix) + 1].isdigit() and name.endswith(".jsonl")


def _lm_base():
    from lm_eval.api.model import LM

    return LM


def make_dedup_lm(inner, cache=None, dedup: bool = True):
    """Wrap an lm-eval LM: identical generation requests are answered by one generation (``dedup``),
    and, given a :class:`consistbench.benchmark.gencache.GenerationCache`, answers already in it are
    not generated again while new ones are appended to it as each finishes."""
    LM = _lm_base()

    class DedupLM(LM):
        def __init__(self, lm):
            super().__init__()
            self.inner = lm
            self.requested = 0
            self.generated = 0   # distinct requests (the generations a run needs)
            self.from_cache = 0  # of those, answered from the generation cache

        def __getattr__(self, name):  # rank, world_size, tokenizer, config, ... come from the model
            if name == "inner":
                raise AttributeError(name)
            return getattr(self.inner, name)

        @property
        def rank(self):
            return self.inner.rank

        @property
        def world_size(self):
            return self.inner.world_size

        @property
        def tokenizer_name(self):
            return getattr(self.inner, "tokenizer_name", "")

        def apply_chat_template(self, chat_history, add_generation_prompt=True):
            return self.inner.apply_chat_template(chat_history, add_generation_prompt)

        def chat_template(self, chat_template=False):
            return self.inner.chat_template(chat_template)

        # The LM base class defines single-process no-ops for these; data parallel runs need the model's.
        def all_gather(self, tensor):
            return self.inner.all_gather(tensor)

        def gather_object(self, obj, dst=0):
            return self.inner.gather_object(obj, dst)

        def barrier(self):
            return self.inner.barrier()

        def loglikelihood(self, requests):
            return self.inner.loglikelihood(requests)

        def loglikelihood_rolling(self, requests):
            return self.inner.loglikelihood_rolling(requests)

        def generate_until(self, requests, disable_tqdm: bool = False):
            keys = [(req.args[0], json.dumps(req.args[1], sort_keys=True, default=str)) for req in requests]
            first: dict[tuple, int] = {}
            unique = []
            for i, (req, key) in enumerate(zip(requests, keys)):
                if not dedup:
                    key = keys[i] = (i, *key)
                if key not in first:
                    first[key] = len(unique)
                    unique.append(req)
            answers: list[str | None] = [None] * len(unique)
            if cache is not None:
                for j, req in enumerate(unique):
                    answers[j] = cache.get(req.args[0], req.args[1])
            todo = [j for j, a in enumerate(answers) if a is None]
            self.requested += len(requests)
            self.generated += len(unique)
            self.from_cache += len(unique) - len(todo)
            if todo:
                hook = getattr(self.inner, "cache_hook", None)
                if cache is not None:
                    self.inner.set_cache_hook(cache_hook_for(cache))  # appends each answer as it finishes
                try:
                    outputs = self.inner.generate_until([unique[j] for j in todo])
                finally:
                    if cache is not None and hook is not None:
                        self.inner.set_cache_hook(hook)
                for j, out in zip(todo, outputs):
                    answers[j] = out
                    if cache is not None:  # models that do not call the hook
                        cache.add(unique[j].args[0], unique[j].args[1], out)
                if cache is not None:
                    cache.sync()
            return [answers[first[key]] for key in keys]

    return DedupLM(inner)


@dataclass
class EvalOptions:
    model: str | None = None  # None: the backend's model (consistbench-hf for "default" and "fast")
    backend: str = "default"  # default (fp32, exact) | fast (bf16) | hf (lm-eval's own HF model)
    generation_cache: bool = True  # append each answer to OUT/.consistbench-cache/ and reuse it on a rerun
    model_args: str | None = None
    tasks: tuple[str, ...] = DEFAULT_TASKS
    output_path: str = "out"
    batch_size: int | str = 8
    device: str | None = None  # None: lm-eval's choice (CUDA when present, else CPU)
    seed: int = 1234
    apply_chat_template: bool | None = None  # None: when the tokenizer has one
    limit: int | None = None
    dedup: bool = True
    trust_remote_code: bool = False
    include_paths: tuple[str, ...] = ()  # extra task folders, indexed beside consistbench's own
    gen_kwargs: str | None = None  # lm-eval --gen_kwargs, e.g. "max_gen_toks=128" (overrides the tasks')
    # scoring settings, passed to the tasks as lm-eval metadata (recorded in the results JSON)
    settings: ScoreSettings = field(default_factory=ScoreSettings)
    boot: BootstrapSettings | None = field(default_factory=BootstrapSettings)  # None: no intervals
    # a user's prompt-template set for consistency_template (task metadata ``templates_file``)
    templates_file: str | None = None
    # lm-eval's `samples`: only these document indices of each named task (instead of `limit`);
    # lm-eval then numbers the chosen documents 0..k-1 in doc_id, in their task order
    samples: dict[str, list[int]] | None = None

    def metadata(self) -> dict:
        """The task metadata these options set (what ``lm_eval --metadata`` would carry)."""
        meta = self.settings.metadata() | bootstrap_metadata(self.boot)
        if self.templates_file:
            meta["templates_file"] = str(Path(self.templates_file).resolve())
        return meta


def default_model_args() -> str:
    return f"pretrained={convert_smollm2()},dtype=float32"


# --backend: how a local transformers model generates. Only "default" and "hf" keep the canonical
# numerics (float32, greedy); the fast tiers change the arithmetic and say so in every results file.
BACKENDS = {
    "default": ("consistbench-hf", {}),
    "fast": ("consistbench-hf", {"dtype": "bfloat16"}),
    "hf": ("hf", {}),
}
TRANSFORMERS_MODELS = ("hf", "hf-auto", "huggingface", "consistbench-hf")


def resolve_backend(opts: EvalOptions) -> tuple[str, str]:
    """The lm-eval model name and model_args for ``opts`` (its backend applied); never a silent substitute."""
    if opts.backend not in BACKENDS:
        raise ConsistbenchError(f"unknown --backend {opts.backend!r}; choose from {', '.join(BACKENDS)}")
    name, overrides = BACKENDS[opts.backend]
    model = opts.model or name
    if opts.model and opts.backend != "default" and opts.model not in TRANSFORMERS_MODELS:
        raise ConsistbenchError(f"--backend {opts.backend} applies to local transformers models, not --model {opts.model}")
    if opts.model in TRANSFORMERS_MODELS and opts.backend != "default":
        model = name
    args = _parse_model_args(opts.model_args or default_model_args())
    args.update(overrides)
    return model, ",".join(f"{k}={v}" for k, v in args.items())


def _parse_model_args(text: str) -> dict[str, str]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise ConsistbenchError(f"--model-args: expected key=value, got {part!r}")
        key, value = part.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def in_hub_cache(repo_id: str, revision: str | None = None) -> bool:
    """Whether a hub model id resolves from the local Hugging Face cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return False
    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - a malformed id is simply not in the cache
        return False
    return isinstance(found, str)


def check_model_args(model: str, model_args: str, trust_remote_code: bool) -> str:
    """Refuse a local path that does not exist, a hub id that offline runs cannot resolve, and
    remote code unless asked for. Offline, a hub id already in the Hugging Face cache is fine."""
    args = _parse_model_args(model_args)
    pretrained = args.get("pretrained") or args.get("model")
    if pretrained and model in (*TRANSFORMERS_MODELS, "vllm"):
        looks_local = pretrained.startswith(("/", ".", "~")) or os.sep in pretrained and Path(pretrained).exists()
        offline = os.environ.get("HF_HUB_OFFLINE", "1") not in ("0", "false", "False")
        exists = Path(pretrained).expanduser().exists()
        if looks_local and not exists:
            raise ConsistbenchError(f"model path {pretrained!r} does not exist")
        if offline and not exists and not in_hub_cache(pretrained, args.get("revision")):
            raise ConsistbenchError(f"model {pretrained!r} is neither a local folder nor in the Hugging Face cache; "
                                    "runs are offline (set HF_HUB_OFFLINE=0 to download hub models)")
    if args.get("trust_remote_code", "false").lower() == "true" and not trust_remote_code:
        raise ConsistbenchError("trust_remote_code=True in --model-args needs --trust-remote-code")
    return model_args


def task_manager(include_paths: tuple[str, ...] = (), metadata: dict | None = None):
    """lm-eval's TaskManager over consistbench's tasks (and ``include_paths``); ``metadata`` is
    merged into every task's metadata, as ``lm_eval --metadata`` does."""
    from lm_eval.tasks import TaskManager

    for extra in include_paths:
        if not Path(extra).is_dir():
            raise ConsistbenchError(f"--include-path {extra!r} is not a directory")
    return TaskManager(include_path=[str(tasks_path()), *map(str, include_paths)], include_defaults=False,
                       metadata=metadata)


def check_tasks(tm, tasks: tuple[str, ...]) -> None:
    known = set(tm.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        ours = sorted(t for t in known if t.startswith("consistency") or t == "consistbench")
        raise ConsistbenchError(f"unknown task {unknown[0]!r}; available: {', '.join(ours)}")


TEMPLATE_TASKS = ("consistency_template", "consistency_template_mini", "consistency_robust", "consistency_robust_mini")


def check_templates_file(opts: EvalOptions) -> dict | None:
    """Validate ``--templates`` before any model loads; what the results JSON records about it."""
    if not opts.templates_file:
        return None

    if not any(t in TEMPLATE_TASKS for t in opts.tasks):
        raise ConsistbenchError("--templates applies to the consistency_template task; add it to --tasks "
                                "(consistency_template, consistency_template_mini or a consistency_robust tag)")
    path = Path(opts.templates_file).resolve()
    return describe(load_templates(path), str(path))


def load_model(opts: EvalOptions):
    from lm_eval.api.registry import get_model

    import consistbench.benchmark.fastlm  # noqa: F401  (registers consistbench-hf with lm-eval)

    model_name, model_args = resolve_backend(opts)
    model_args = check_model_args(model_name, model_args, opts.trust_remote_code)
    try:
        cls = get_model(model_name)
    except (ValueError, KeyError) as exc:
        raise ConsistbenchError(f"unknown lm-eval model type {model_name!r}: {exc}") from None
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and str(opts.device or _default_device()).startswith("cpu"):
        os.environ.setdefault("ACCELERATE_USE_CPU", "1")  # join the ranks over gloo, not a GPU backend
    extra = {"batch_size": opts.batch_size, "device": opts.device or _default_device()}
    try:
        lm = cls.create_from_arg_string(model_args, extra)
        if distributed:
            enable_cpu_data_parallel(lm)
    except ConsistbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes one clear line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConsistbenchError(f"model failed to load ({model_name}, {model_args}): {type(exc).__name__}: {msg}") from None
    return lm, model_name, model_args


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def enable_cpu_data_parallel(lm) -> None:
    """Split the rows over the ranks of an ``accelerate launch`` on CPU.

    lm-eval 0.4.13's ``HFLM`` turns on data parallelism only when it sees more than one GPU, so
    under ``accelerate launch`` on CPU every process would generate every row. Here, once the
    model is loaded, the ranks are wired up the way HFLM does it on GPUs (its ``accelerator``,
    ``_rank``, ``_world_size``); lm-eval then shards the requests and gathers every rank's
    items before the aggregations, which pair responses by ``group_id``.
    """
    from accelerate import Accelerator
    from lm_eval.models.huggingface import HFLM

    if not isinstance(lm, HFLM) or lm.world_size > 1:
        return
    accelerator = Accelerator()
    if accelerator.num_processes > 1:
        lm.accelerator = accelerator
        set_lm_eval_rank(lm, accelerator.process_index, accelerator.num_processes)


def _has_chat_template(lm) -> bool:
    tok = getattr(lm, "tokenizer", None)
    return bool(getattr(tok, "chat_template", None))


def run_eval(opts: EvalOptions) -> dict[str, Any]:
    """Run the tasks; return {'results': lm-eval results, 'files': written paths, 'dedup': counts}."""
    from lm_eval import evaluator
    from lm_eval.loggers import EvaluationTracker

    templates = check_templates_file(opts)
    tm = task_manager(opts.include_paths, opts.metadata())
    check_tasks(tm, opts.tasks)
    t0 = time.perf_counter()
    lm, model_name, model_args = load_model(opts)
    out_root = Path(opts.output_path)
    out_root.mkdir(parents=True, exist_ok=True)
    cache = open_generation_cache(opts, lm, model_name, model_args) if opts.generation_cache else None
    model = make_dedup_lm(lm, cache=cache, dedup=opts.dedup) if (opts.dedup or cache is not None) else lm
    chat = _has_chat_template(lm) if opts.apply_chat_template is None else opts.apply_chat_template
    staging = Path(tempfile.mkdtemp(prefix=".consistbench-eval.", dir=out_root))
    try:
        tracker = EvaluationTracker(output_path=str(staging))
        try:
            results = evaluator.simple_evaluate(
                model=model, tasks=list(opts.tasks), task_manager=tm, apply_chat_template=chat,
                log_samples=True, evaluation_tracker=tracker, limit=opts.limit, samples=opts.samples, gen_kwargs=opts.gen_kwargs,
                random_seed=opts.seed, numpy_random_seed=opts.seed, torch_random_seed=opts.seed, fewshot_random_seed=opts.seed)
        except ConsistbenchError:
            raise
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc.__cause__, DataVersionError):
                raise ConsistbenchError(str(exc)) from None
            raise
        counts = (getattr(model, "requested", 0), getattr(model, "generated", 0), getattr(model, "from_cache", 0))
        per_rank = lm.gather_object(counts) if lm.world_size > 1 else [counts]  # a collective: every rank calls it
        if cache is not None:
            cache.close()
        if results is None:  # non-zero ranks under accelerate
            return {"results": None, "files": [], "dedup": None}
        results["config"]["model_args"] = model_args
        results["config"]["model"] = model_name
        dedup = ({"requested": sum(c[0] for c in per_rank), "generated": sum(c[1] for c in per_rank)}
                 if opts.dedup else None)
        gen_cache = ({"path": str(cache.path), "from_cache": sum(c[2] for c in per_rank),
                      "generated_now": sum(c[1] - c[2] for c in per_rank)} if cache is not None else None)
        results["consistbench"] = {"dedup": dedup, "wall_seconds": round(time.perf_counter() - t0, 2),
                                   "apply_chat_template": bool(chat), "backend": opts.backend,
                                   "generation_cache": gen_cache,
                                   "settings": opts.settings.describe()
                                   | {"bootstrap": opts.boot.describe() if opts.boot else None}}
        if templates:
            results["consistbench"]["templates"] = templates  # the user's set: file, checksum, ids
        samples = results.pop("samples")

        add_to_lm_eval_results(results, samples, opts.settings, opts.boot)  # 95% intervals, stderr column
        # lm-eval names the model from the model_args string it was given; handed a model object it
        # makes up a random id, so name it here as its CLI would (the `pretrained` value)
        pretrained = _parse_model_args(model_args).get("pretrained")
        tracker.general_config_tracker.model_name = pretrained or model_name
        tracker.general_config_tracker.model_name_sanitized = _sanitize(pretrained or "model")
        tracker.save_results_aggregated(results=results, samples=samples)
        for task_name in results["configs"]:
            tracker.save_results_samples(task_name=task_name, samples=samples[task_name])

        model_dir = next(p for p in staging.iterdir() if p.is_dir())
        families = robust_families(results)
        for task_name in results["results"]:
            if not any(task_name in tasks for tasks in families.values()):
                bar_chart(task_metrics(results, task_name), model_dir / f"report_{task_name}.png",
                          title=f"{task_name}: {model_dir.name}")
        for chart, tasks in families.items():  # one chart of the robust families per subset
            families_chart({fam: task_metrics(results, t) for t, fam in tasks.items()}, model_dir / f"report_{chart}.png",
                           title=f"{chart}: {model_dir.name}")
        final = out_root / model_dir.name
        final.mkdir(parents=True, exist_ok=True)
        files = []
        for f in sorted(model_dir.iterdir()):
            os.replace(f, final / f.name)
            files.append(final / f.name)
        return {"results": results, "files": files, "dedup": dedup, "generation_cache": gen_cache}
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def open_generation_cache(opts: EvalOptions, lm, model_name: str, model_args: str):
    """This run's generation cache, ``OUT/.consistbench-cache/generations-<model identity>.jsonl``.

    Under data parallelism each rank appends to its own file and reads every rank's."""
    ident = model_identity(model_name, model_args, extra=json.dumps({"batch_size": str(opts.batch_size),
                                                                     "device": str(opts.device)}))
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    folder = Path(opts.output_path) / ".consistbench-cache"
    rank = f".rank{lm.rank}" if lm.world_size > 1 else ""
    cache = GenerationCache(folder / f"generations-{digest}{rank}.jsonl", ident)
    for other in sorted(folder.glob(f"generations-{digest}*.jsonl")):  # the other ranks' answers
        if other != cache.path:
            cache.entries.update(GenerationCache(other, ident, readonly=True).entries)
    return cache


def robust_families(results: dict) -> dict[str, dict[str, str]]:
    """The robust-family tasks of a results JSON, by chart: ``{"consistency_robust": {task: family}}``
    (``consistency_robust_mini`` for tasks on the mini subset); read from each task's config."""
    out: dict[str, dict[str, str]] = {}
    for task in results.get("results", {}):
        kwargs = (results.get("configs", {}).get(task) or {}).get("dataset_kwargs") or {}
        if kwargs.get("robust"):
            chart = "consistency_robust" + ("_mini" if kwargs.get("subset") == "mini" else "")
            out.setdefault(chart, {})[task] = str(kwargs["robust"])
    return out


def _sanitize(pretrained: str) -> str:
    """The output folder name for a model: a local path's last part, a hub id with '/' escaped."""
    name = Path(pretrained).name if os.sep in pretrained else pretrained
    return "".join(c if c.isalnum() or c in "-_." else "__" for c in name) or "model"


def task_metrics(results: dict, task: str) -> dict[str, float]:
    """One task's metrics with lm-eval's ',none' filter suffix removed (and their intervals)."""
    out = {}
    for key, value in results["results"][task].items():
        if "," in key and not key.endswith("_stderr,none") and isinstance(value, (int, float)):
            out[key.split(",")[0]] = float(value)
    return MetricValues(out, results.get("consistbench", {}).get("intervals", {}).get(task))
