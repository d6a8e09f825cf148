"""``consistbench leaderboard validate``: accept a submission only if its numbers are true.

Checks, in order (the first failure raises :class:`~consistbench.benchmark.errors.ConsistbenchError` with one
line naming the file and the problem):

1. files: ``metadata.json`` and the two files it names are plain files inside the submission
   directory (no ``..``, no absolute path, no symbolic link, no FIFO or device) and within
   :data:`LIMITS`; every file is read by the hardened reader
   (:mod:`consistbench.benchmark.untrusted`: duplicate keys, nesting depth, huge integers, lone
   surrogates, Infinity and gzip bombs are refused);
2. ``metadata.json`` is well-formed JSON and matches :class:`~consistbench.leaderboard.schema.SubmissionMetadata`;
3. the results JSON is lm-eval's, for exactly the leaderboard task, on a shipped data version
   (``configs.<task>.metadata.data_sha256`` equals ``tasks/consistency/data/versions.json``'s
   test checksum and the task template's, or that of a frozen earlier version, whose versioned
   task then supplies the documents) and the shipped task version, zero-shot, without a
   ``limit`` (``config.limit`` null, ``n-samples`` the task's full document count), with the
   task's own generation settings (``config.gen_kwargs`` null, ``configs.<task>.generation_kwargs``
   equal to the task's), no system instruction, and a recorded chat template whose
   ``chat_template_sha`` matches it;
4. the samples JSONL answers every document of the task exactly once; each sample's document
   equals the shipped one, sits at its position in the task (``doc_id``), was prompted with
   exactly that document's prompt (the task's ``doc_to_text``, wrapped in the recorded chat
   template the way lm-eval wraps it: :class:`PromptFormat`), with exactly the task's generation
   settings, and its response (at most :data:`~consistbench.benchmark.metrics.MAX_TEXT_CHARS`
   characters) is the one its metric items carry;
5. every metric of the task is rescored from the responses with :mod:`consistbench.benchmark.metrics`
   (against the shipped references, not the sample's) and must equal the reported value within
   :func:`tolerance`;
6. a reproduction record (``reproduction.json``, written by ``consistbench leaderboard
   reproduce``), when present, is for exactly these files and says the responses reproduced.

What rescoring cannot prove (that a model produced the responses) is what reproduction is for:
:func:`plausibility` marks results that need it ("needs reproduction") and
:mod:`consistbench.leaderboard.reproduce` does it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consistbench.benchmark import untrusted
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.metrics import MAX_TEXT_CHARS
from consistbench.benchmark.taskdata import SCORING_KEYS
from consistbench.benchmark.paths import TASK_DIR
from consistbench.leaderboard.schema import METADATA_FILE, REPRODUCTION_FILE, ReproductionRecord, SubmissionMetadata

LEADERBOARD_TASK = "consistency"
# Tracks: one ranking per task. Both use the same data version; their numbers are not comparable.
TRACKS = {
    "consistency": "Main track: every document of the test split",
    "consistency_mini": "Quick track: the whole groups listed in tasks/consistency/data/mini_groups.txt",
    "consistency_small": ("Small track: the 300 whole test groups listed in tasks/consistency/data/small_groups.txt "
                          "(stratified by variant type; the reference method's evaluation set)"),
}
MiB = 1024 * 1024
# Size limits, in bytes. The full test task's samples file from `consistbench eval` is about
# 9 KB per document (prompt, doc and one item per metric), ~40 MB for 4,148 documents; the
# limits leave room for long chat templates while keeping a hostile submission cheap to refuse.
LIMITS = {
    "metadata": 64 * 1024,
    "results": 8 * MiB,
    "samples": 256 * MiB,  # uncompressed (a .jsonl.gz is measured after decompression too)
    "samples_compressed": 64 * MiB,
    "samples_line": 1 * MiB,  # one sample (~20 KB from consistbench eval)
    "reproduction": 256 * 1024,
}
# Every file of a submission: at most this many nested arrays/objects (lm-eval's deepest is ~6),
# strings of at most STRING_CHARS characters (the longest are prompts and the chat template),
# integers of at most 32 digits (the reader's default). A chat template longer than
# CHAT_TEMPLATE_CHARS is refused (real ones are 0.5-10 KB) and rendering it for one document may
# take at most RENDER_SECONDS of CPU time (it runs in Jinja's sandbox, which bounds each range()
# but not nested loops; a real template renders in well under a millisecond).
DEPTH = 32
STRING_CHARS = 256 * 1024
CHAT_TEMPLATE_CHARS = 64 * 1024
RENDER_SECONDS = 2.0
# Rescoring tolerance (absolute). rougeL, bleu, em and rs are exact computations in float64 whose
# only freedom is summation order (differences ~1e-15); bs runs a float32 neural encoder whose
# kernels differ between CPU/GPU builds and batch compositions (observed differences ~1e-7 per
# pair), so it gets 1e-4, still ten times finer than the site's displayed precision.
TOLERANCE = 1e-6
TOLERANCE_BS = 1e-4
DOC_FIELDS = ("id", "group_id", "variant_type", "question", "context", "reference")


def tolerance(metric: str) -> float:
    return TOLERANCE_BS if metric == "bs" or metric.startswith("bs_") else TOLERANCE


@dataclass
class Validated:
    """What a valid submission says, with the numbers recomputed from its samples."""

    directory: Path
    metadata: SubmissionMetadata
    task: str
    data_sha256: str
    task_version: Any
    n_docs: int
    n_pairs: int
    metrics: dict[str, float]
    reported: dict[str, float]
    max_diff: dict[str, float] = field(default_factory=dict)
    lm_eval_version: str | None = None
    model_args: str | None = None
    responses: dict[str, str] = field(default_factory=dict, repr=False)  # doc id -> response (for intervals)
    # verification level: "reproduced" (a valid reproduction record), "needs reproduction" (the
    # results break a plausibility bound and were not reproduced) or "rescored"
    verification: str = "rescored"
    implausible: list[str] = field(default_factory=list)  # which plausibility bounds it breaks
    reproduction: ReproductionRecord | None = None
    files: list[str] = field(default_factory=list)  # the submission's files, as the site copies them
    content_sha256: str = ""
    prompts: PromptFormat | None = field(default=None, repr=False)
    robust_responses: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)  # robust task -> responses


# ---------------------------------------------------------------------------------------------
# Files

# how results made by consistbench 0.1 recorded the default BERTScore encoder (now ``null``)
_LEGACY_DEFAULT_BS_MODEL = "sentence-transformers/all-MiniLM-L6-v2 (embedded), num_layers 6"


def _fail(msg: str) -> None:
    raise ConsistbenchError(msg)


def _read_limits(kind: str) -> untrusted.ReadLimits:
    """The hardened reader's limits for one kind of submission file (read from :data:`LIMITS`
    at call time, so a test can lower them)."""
    if kind == "samples":
        return untrusted.ReadLimits(file_bytes=max(LIMITS["samples"], LIMITS["samples_compressed"]),
                                    text_bytes=LIMITS["samples"],
                                    line_bytes=LIMITS["samples_line"], depth=DEPTH, string_chars=STRING_CHARS,
                                    nan=False)
    size = LIMITS[kind]
    # NaN: lm-eval writes it for a metric without data (results); never in metadata or a record
    return untrusted.ReadLimits(file_bytes=size, text_bytes=size, line_bytes=size, depth=DEPTH,
                                string_chars=STRING_CHARS, nan=kind == "results")


def _inside(directory: Path, name: str, what: str) -> Path:
    """The path of ``name`` in ``directory``; refuse anything that could leave it, any symbolic
    link and anything but a regular file."""
    if (not isinstance(name, str) or not name or name.startswith(("/", "\\", "~")) or "/" in name or "\\" in name
            or name in (".", "..") or ".." in name.split(".") or ":" in name or "\x00" in name):
        _fail(f"{directory / METADATA_FILE}: {what} file name {name!r} tries to leave the submission directory "
              "(give a plain file name inside it)")
    path = directory / name
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):  # RuntimeError: Python 3.11's resolve() on a loop
            _fail(f"{path}: {what} file is a symbolic link loop (or a dangling link)")
        if not target.is_relative_to(directory.resolve()):
            _fail(f"{path}: {what} file is a link that leaves the submission directory")
        _fail(f"{path}: {what} file is a symbolic link (a submission holds plain files, not links)")
    if not path.exists():
        _fail(f"{path}: {what} file is missing")
    if not path.is_file():
        _fail(f"{path}: {what} file is not a regular file")
    return path


def _check_size(path: Path, limit: int, what: str) -> None:
    try:
        size = path.stat(follow_symlinks=False).st_size
    except OSError as exc:
        _fail(untrusted.describe_os_error(path, exc, f"{what} file"))
    if size > limit:
        _fail(f"{path}: {what} file is {size / MiB:.1f} MiB, above the limit of {limit / MiB:g} MiB")


def _load_json(path: Path, what: str, kind: str) -> Any:
    """One submission JSON file through the hardened reader (never following a link)."""
    return untrusted.read_json(path, _read_limits(kind), what=what, follow_symlinks=False)


# ---------------------------------------------------------------------------------------------
# The shipped task

@dataclass
class TaskSpec:
    name: str
    config: dict
    data_sha256: str
    version: Any
    metrics: list[str]
    generation_kwargs: dict
    docs: list[dict]  # in the task's order: doc_id i is docs[i]
    rs_threshold: float


def shipped_data_version() -> str:
    """The test split's checksum from ``versions.json``; must agree with the task template."""
    versions = json.loads((TASK_DIR / "data" / "versions.json").read_text())
    return versions["test"]["sha256"]


@functools.lru_cache(maxsize=4)
def load_task(task: str, data_sha256: str | None = None) -> TaskSpec:
    """The shipped task's config (through lm-eval's own YAML loader) and its documents in order.

    ``data_sha256``: an earlier, frozen data version (``consistbench.benchmark.dataversions``);
    the task is then read from its versioned YAML (``consistency_mini`` on v1:
    ``consistency_mini_v1.yaml``), so a submission is rescored against the data it was made on.
    """
    from consistbench.benchmark import dataversions
    from consistbench.benchmark.compat import lm_eval_load_yaml as load_yaml
    from consistbench.benchmark.taskdata import task_records

    data_sha = shipped_data_version()
    yaml_name = task
    if data_sha256 is not None and data_sha256 != data_sha:
        version = dataversions.by_sha256(data_sha256)
        yaml_name, data_sha = f"{task}_{version.name}", version.sha256
    path = TASK_DIR / f"{yaml_name}.yaml"
    if not path.is_file():
        _fail(f"unknown task {yaml_name!r}: no {path.name} in {TASK_DIR}")
    config = load_yaml(path, resolve_func=False)
    meta = config.get("metadata") or {}
    if meta.get("data_sha256") != data_sha:
        _fail(f"the shipped task {yaml_name} records data version {str(meta.get('data_sha256'))[:16]}... but "
              f"the data says {data_sha[:16]}...: rebuild the data or the task")
    docs = task_records(data_sha256=data_sha, **(config.get("dataset_kwargs") or {}))
    return TaskSpec(name=task, config=config, data_sha256=data_sha, version=meta.get("version"),
                    # *_stderr entries are uncertainty estimates, not scores: not rescored here
                    metrics=[m["metric"] for m in config["metric_list"] if not m["metric"].endswith("_stderr")],
                    generation_kwargs=dict(config.get("generation_kwargs") or {}), docs=docs,
                    rs_threshold=float(meta.get("rs_threshold", 0.8)))


def frozen_version_of(res: dict, task: str) -> str | None:
    """The data version a results JSON records for ``task`` when it is a shipped earlier version
    (None when it is the current one, unknown or missing: the usual checks then apply)."""
    from consistbench.benchmark import dataversions
    from consistbench.benchmark.errors import DataVersionError

    cfg = res["configs"].get(task)
    recorded = (cfg.get("metadata") or {}).get("data_sha256") if isinstance(cfg, dict) else None
    if not isinstance(recorded, str) or recorded == shipped_data_version():
        return None
    try:
        return dataversions.by_sha256(recorded).sha256
    except DataVersionError:
        return None


# ---------------------------------------------------------------------------------------------
# Checks

def _metadata(directory: Path) -> SubmissionMetadata:
    from pydantic import ValidationError

    path = directory / METADATA_FILE
    if path.is_symlink():
        _fail(f"{path}: is a symbolic link (a submission holds plain files, not links)")
    if not path.is_file():
        _fail(f"{path}: missing (every submission has a {METADATA_FILE}; see docs/LEADERBOARD.md)")
    _check_size(path, LIMITS["metadata"], "metadata")
    raw = _load_json(path, "metadata", "metadata")
    if not isinstance(raw, dict):
        _fail(f"{path}: expected a JSON object, got {type(raw).__name__}")
    files = raw.get("files")
    if isinstance(files, dict):  # name the traversal plainly before the schema's generic message
        for key in ("results", "samples"):
            if isinstance(files.get(key), str):
                _inside(directory, files[key], key)
    try:
        return SubmissionMetadata.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
        _fail(f"{path}: {where}: {err['msg']}{more}")


def _results_task(path: Path, task: str | None) -> tuple[dict, str]:
    """The results JSON and its one task, which must be a leaderboard track (``task`` if given)."""
    res = _load_json(path, "results JSON", "results")
    if not isinstance(res, dict) or not isinstance(res.get("results"), dict) or not isinstance(res.get("configs"), dict):
        _fail(f"{path}: not an lm-eval results JSON (no 'results' and 'configs' objects)")
    tasks = sorted(set(res["results"]) - set(_robust_tasks(res)))  # robust families ride along (leaderboard.robust)
    allowed = [task] if task else list(TRACKS)
    if len(tasks) != 1 or tasks[0] not in allowed:
        _fail(f"{path}: holds tasks {tasks}; a leaderboard submission holds exactly one task, "
              + (f"{task!r}" if task else "one of " + ", ".join(map(repr, TRACKS))))
    return res, tasks[0]


def _results(path: Path, res: dict, spec: TaskSpec) -> dict:
    cfg = res["configs"].get(spec.name)
    if not isinstance(cfg, dict):
        _fail(f"{path}: no configs.{spec.name} entry")
    recorded = (cfg.get("metadata") or {}).get("data_sha256")
    if recorded is None:
        _fail(f"{path}: no data version (configs.{spec.name}.metadata.data_sha256): "
              "was it produced with the consistbench tasks?")
    if recorded != spec.data_sha256:
        _fail(f"{path}: wrong data version: the results were produced on data {str(recorded)[:16]}... but the "
              f"shipped test split is {spec.data_sha256[:16]}...; re-run the evaluation on the current data")
    version = (res.get("versions") or {}).get(spec.name)
    if version != spec.version:
        _fail(f"{path}: task version {version!r} differs from the shipped task's version {spec.version!r}")
    shots = (res.get("n-shot") or {}).get(spec.name, 0)
    if shots not in (0, None) or cfg.get("num_fewshot") not in (0, None):
        _fail(f"{path}: run with {shots or cfg.get('num_fewshot')} few-shot examples; the benchmark is zero-shot")
    run = res.get("config")
    if not isinstance(run, dict):
        _fail(f"{path}: no 'config' object (lm-eval records the run's settings there)")
    if run.get("limit") is not None:
        _fail(f"{path}: config.limit is {run['limit']!r}: the run was limited to part of the task; a submission "
              "answers every document (run without --limit)")
    counts = (res.get("n-samples") or {}).get(spec.name)
    if not isinstance(counts, dict):
        _fail(f"{path}: no n-samples.{spec.name} entry (lm-eval records how many documents it ran)")
    for key in ("original", "effective"):
        if counts.get(key) != len(spec.docs):
            _fail(f"{path}: n-samples.{spec.name}.{key} is {counts.get(key)!r}, the task has {len(spec.docs)} "
                  "documents (a limited or partial run)")
    if run.get("gen_kwargs") not in (None, {}, ""):
        _fail(f"{path}: config.gen_kwargs is {run['gen_kwargs']!r}: the run overrode the task's generation "
              "settings (run without --gen_kwargs)")
    bad = _gen_kwargs_match(cfg.get("generation_kwargs"), spec.generation_kwargs)
    if bad:
        _fail(f"{path}: configs.{spec.name}.generation_kwargs differ from the task's ({bad})")
    meta = cfg.get("metadata") or {}
    for key in SCORING_KEYS:  # absent in results made before the settings became task metadata: the defaults
        value = meta.get(key)
        if key == "bs_model" and value == _LEGACY_DEFAULT_BS_MODEL:
            value = None  # the default encoder, as results of consistbench 0.1 spelled it
        if key in meta and value != spec.config.get("metadata", {}).get(key):
            _fail(f"{path}: configs.{spec.name}.metadata.{key} is {meta[key]!r}, not the benchmark's "
                  f"{spec.config.get('metadata', {}).get(key)!r}: leaderboard entries use the default scoring settings")
    return res


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _prompt_of(sample: dict) -> tuple[str, Any]:
    args = sample.get("arguments")
    if isinstance(args, dict):  # lm-eval's samples file: {"gen_args_0": {"arg_0": prompt, "arg_1": kwargs}}
        first = args.get("gen_args_0") or {}
        return first.get("arg_0"), first.get("arg_1")
    if isinstance(args, list) and args and isinstance(args[0], list) and args[0]:  # in-memory form
        return args[0][0], (args[0][1] if len(args[0]) > 1 else None)
    return None, None


# ---------------------------------------------------------------------------------------------
# Prompts: what lm-eval 0.4.13 sends for one document of a zero-shot task without a description

class _TooSlow(Exception):
    pass


@contextlib.contextmanager
def _cpu_deadline(seconds: float):
    """Raise :class:`_TooSlow` in the block once it used ``seconds`` of CPU time.

    SIGPROF from ``ITIMER_PROF`` counts the process's CPU time, not wall time, so a loaded machine
    does not trip it. The timer re-fires every 50 ms after the deadline: an exception raised while
    Python runs a finalizer is swallowed, the next one lands. Only in the main thread (signals are
    delivered there); elsewhere the block runs unbounded.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def _alarm(signum, frame):
        raise _TooSlow

    previous = signal.signal(signal.SIGPROF, _alarm)
    signal.setitimer(signal.ITIMER_PROF, seconds, 0.05)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


@dataclass(frozen=True)
class PromptFormat:
    """How lm-eval turned a document's ``doc_to_text`` into the logged prompt.

    lm-eval 0.4.13 (``ConfigurableTask.fewshot_context``), zero-shot, no description, no system
    instruction, no ``gen_prefix``: the prompt is the one user message ``doc_to_text(doc)``;
    ``plain`` sends it as it is; ``chat_template`` renders ``[{"role": "user", "content": text}]``
    with the model tokenizer's chat template (``add_generation_prompt=True``, the tokenizer's
    special tokens as template variables, exactly as ``tokenizer.apply_chat_template`` does, and
    ``enable_thinking`` when the run's ``model_args`` set it, as lm-eval's HF model passes it) -
    the template is the one lm-eval logged in the results JSON (``chat_template``), so no model is
    needed; ``chat_messages`` (chat-completions APIs, logged template ``""``) logs the messages
    as a JSON string.
    """

    kind: str  # "plain" | "chat_template" | "chat_messages"
    template: str | None = None
    special_tokens: tuple[tuple[str, Any], ...] = ()  # template variables: special tokens, enable_thinking

    def describe(self) -> str:
        return {"plain": "the task's prompt as plain text", "chat_messages": "the task's prompt as one chat message",
                "chat_template": "the task's prompt in the recorded chat template"}[self.kind]

    def matches(self, prompt: str, text: str, system: str = "") -> bool:
        """Whether ``prompt`` is exactly what lm-eval sends for a document whose ``doc_to_text`` is
        ``text`` and whose task ``description`` is ``system`` (lm-eval: a system message under a chat
        template, plain text before the prompt without one)."""
        if self.kind == "plain":
            return prompt == system + text
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        if self.kind == "chat_messages":
            try:
                logged = untrusted.loads(prompt, "prompt", untrusted.ReadLimits(depth=4))
            except ConsistbenchError:
                return False
            return logged == messages
        rendered = self.render(messages, max_chars=len(prompt) + 1)
        return rendered == prompt

    def render(self, messages: list[dict] | str, max_chars: int | None = None) -> str | None:
        """The chat template rendered for ``messages`` (a string: one user message); None when it
        grows past ``max_chars``.

        transformers' own compiled template (its sandboxed Jinja environment, filters and
        globals), rendered as a stream so that a hostile template can neither fill memory nor,
        beyond :data:`RENDER_SECONDS` of CPU time, loop forever.
        """
        from transformers.utils.chat_template_utils import _compile_jinja_template

        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        try:
            compiled = _compile_jinja_template(self.template)
            parts, size = [], 0
            with _cpu_deadline(RENDER_SECONDS):
                for chunk in compiled.generate(messages=messages, tools=None,
                                               documents=None, add_generation_prompt=True,
                                               **dict(self.special_tokens)):
                    size += len(chunk)
                    if max_chars is not None and size > max_chars:
                        return None
                    parts.append(chunk)
        except _TooSlow:
            _fail(f"the recorded chat template takes more than {RENDER_SECONDS:g} s of CPU time to render one prompt")
        except Exception as exc:  # noqa: BLE001 - Jinja syntax/runtime errors, raise_exception(), ...
            msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            _fail(f"the recorded chat template does not render ({type(exc).__name__}: {msg})")
        return "".join(parts)


def prompt_format(path: Path, res: dict) -> PromptFormat:
    """The prompt format the results JSON records, checked for what the benchmark allows."""
    if res.get("system_instruction") not in (None, ""):
        _fail(f"{path}: the run added a system instruction ({str(res['system_instruction'])[:60]!r}); the "
              "benchmark's prompt has none")
    template = res.get("chat_template")
    applied = (res.get("consistbench") or {}).get("apply_chat_template") if isinstance(res.get("consistbench"), dict) else None
    if template is None:
        if applied:
            _fail(f"{path}: consistbench.apply_chat_template is true but no chat_template is recorded")
        return PromptFormat("plain")
    if not isinstance(template, str):
        _fail(f"{path}: chat_template must be a string or null")
    if template == "":
        return PromptFormat("chat_messages")
    if applied is False:
        _fail(f"{path}: a chat_template is recorded but consistbench.apply_chat_template is false")
    if len(template) > CHAT_TEMPLATE_CHARS:
        _fail(f"{path}: chat_template of {len(template):,} characters is longer than the limit of {CHAT_TEMPLATE_CHARS:,}")
    sha = res.get("chat_template_sha")
    if sha is not None and sha != _hash(template):
        _fail(f"{path}: chat_template_sha does not match the recorded chat_template (one of them was edited)")
    tokens: list[tuple[str, Any]] = []
    for name in ("bos_token", "eos_token", "pad_token"):
        value = res.get(f"tokenizer_{name}")  # lm-eval logs [token, id]
        if isinstance(value, list) and value and isinstance(value[0], str):
            tokens.append((name, value[0]))
    # lm-eval's HF model passes model_args' enable_thinking to the template (Qwen3-style templates)
    model_args = (res.get("config") or {}).get("model_args")
    if isinstance(model_args, str):
        model_args = dict(p.split("=", 1) for p in model_args.split(",") if "=" in p)
    thinking = model_args.get("enable_thinking") if isinstance(model_args, dict) else None
    if thinking is not None:
        tokens.append(("enable_thinking", str(thinking).strip().lower() in ("true", "1", "yes")))
    return PromptFormat("chat_template", template, tuple(tokens))


def _gen_kwargs_match(got: Any, want: dict) -> str | None:
    """None when ``got`` is exactly the task's generation settings; else what differs."""
    if not isinstance(got, dict):
        return "no generation settings"
    for key in sorted(set(want) | set(got)):
        if key not in got:
            return f"{key} missing (the task sets {key}={want[key]!r})"
        if key not in want:
            return f"extra setting {key}={got[key]!r}"
        if got[key] != want[key] or isinstance(got[key], bool) != isinstance(want[key], bool):
            return f"{key}={got[key]!r} instead of {want[key]!r}"
    return None


def _samples(path: Path, spec: TaskSpec, prompts: PromptFormat) -> dict[str, str]:
    """Check every sample against the shipped documents; return {doc id: response}."""
    prompt_parts = _prompt_parts(spec)
    index = {doc["id"]: i for i, doc in enumerate(spec.docs)}
    responses: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, sample in untrusted.iter_jsonl(path, _read_limits("samples"), what="samples file",
                                               follow_symlinks=False):
        where = f"{path.name}:{lineno}"
        if not isinstance(sample, dict) or not isinstance(sample.get("doc"), dict):
            _fail(f"{where}: not an lm-eval sample (no 'doc' object)")
        doc = sample["doc"]
        doc_id = doc.get("id")
        if not isinstance(doc_id, str) or doc_id not in index:
            _fail(f"{where}: document {doc_id!r} is not in the shipped task {spec.name!r}")
        if doc_id in first_line:
            _fail(f"{where}: document {doc_id!r} is answered twice (first on line {first_line[doc_id]})")
        first_line[doc_id] = lineno
        shipped = spec.docs[index[doc_id]]
        for name in DOC_FIELDS:
            if doc.get(name) != shipped[name]:
                _fail(f"{where}: document {doc_id!r} differs from the shipped document in field {name!r}")
        if sample.get("doc_id") != index[doc_id]:
            _fail(f"{where}: doc_id {sample.get('doc_id')!r} holds document {doc_id!r}, which is document "
                  f"{index[doc_id]} of the task")
        if sample.get("doc_hash") is not None and sample["doc_hash"] != _hash(
                json.dumps(doc, indent=2, ensure_ascii=False)):
            _fail(f"{where}: doc_hash does not match the sample's document (the sample was edited)")
        prompt, gen_kwargs = _prompt_of(sample)
        text, system = prompt_parts(shipped)
        if not isinstance(prompt, str) or text not in prompt:
            _fail(f"{where}: the response does not belong to document {doc_id!r}: its prompt is not that "
                  "document's prompt")
        if not prompts.matches(prompt, text, system):
            _fail(f"{where}: the prompt of document {doc_id!r} is not exactly {prompts.describe()} (extra text "
                  "such as few-shot examples or another instruction)")
        if sample.get("prompt_hash") is not None and sample["prompt_hash"] != _hash(prompt):
            _fail(f"{where}: prompt_hash does not match the sample's prompt (the sample was edited)")
        bad = _gen_kwargs_match(gen_kwargs, spec.generation_kwargs)
        if bad:
            _fail(f"{where}: generated with other settings than the benchmark's ({bad})")
        if sample.get("filter", "none") != "none":
            _fail(f"{where}: filter {sample.get('filter')!r}; the task has no filters ('none')")
        filtered = sample.get("filtered_resps")
        if not isinstance(filtered, list) or len(filtered) != 1 or not isinstance(filtered[0], str):
            _fail(f"{where}: filtered_resps must be a list with one string")
        response = filtered[0]
        if len(response) > MAX_TEXT_CHARS:
            _fail(f"{where}: the response to document {doc_id!r} has {len(response):,} characters, above the limit "
                  f"of {MAX_TEXT_CHARS:,} (the benchmark generates at most {spec.generation_kwargs.get('max_gen_toks')} "
                  "tokens)")
        resps = sample.get("resps")
        if not (isinstance(resps, list) and resps and isinstance(resps[0], list) and resps[0]
                and resps[0][0] == response):
            _fail(f"{where}: resps and filtered_resps disagree for document {doc_id!r}")
        for metric in spec.metrics:  # lm-eval logs each metric's process_results item in the sample
            item = sample.get(metric)
            if item is None:
                continue
            if not (isinstance(item, list) and len(item) >= 4 and item[0] == doc_id and item[3] == response):
                _fail(f"{where}: the response does not belong to document {doc_id!r}: metric item {metric!r} "
                      "carries another document or response")
        responses[doc_id] = response
    missing = [d["id"] for d in spec.docs if d["id"] not in responses]
    if missing:
        _fail(f"{path.name}: missing samples: {len(missing)} of {len(spec.docs)} documents of task {spec.name!r} "
              f"have no sample (first: {missing[0]!r})")
    return responses


_RESCORED: dict[str, tuple[dict[str, float], int]] = {}


def rescore(spec: TaskSpec, responses: dict[str, str]) -> tuple[dict[str, float], int]:
    """All metrics from the responses, with the shipped references and the task's settings.

    Memoised per process on a hash of (task, data version, threshold, responses): the metrics are
    deterministic, and ``build`` or a test suite may validate the same responses several times.
    """
    from consistbench.benchmark import metrics as M

    key = hashlib.sha256(json.dumps([spec.name, spec.data_sha256, spec.rs_threshold, sorted(responses.items())],
                                    ensure_ascii=False).encode("utf-8")).hexdigest()
    if key not in _RESCORED:
        rows = [M.Scored(d["id"], d["group_id"], d["variant_type"], responses[d["id"]], d["reference"])
                for d in spec.docs]
        M.check_cost(rows, "samples")  # before any metric runs
        settings = M.ScoreSettings(rs_threshold=spec.rs_threshold)
        if len(_RESCORED) >= 16:
            _RESCORED.pop(next(iter(_RESCORED)))
        _RESCORED[key] = (M.compute_all(rows, settings), len(M.pair_by_group(rows)))
    metrics, n_pairs = _RESCORED[key]
    return dict(metrics), n_pairs


def _same(a: float, b: float, tol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol


def compare(path: Path, spec: TaskSpec, res: dict, rescored: dict[str, float]) -> tuple[dict, dict]:
    reported: dict[str, float] = {}
    diffs: dict[str, float] = {}
    block = res["results"][spec.name]
    for metric in spec.metrics:
        value = block.get(f"{metric},none")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(f"{path}: metric {metric!r} is missing from the results (expected key '{metric},none')")
        ours = rescored.get(metric, float("nan"))
        if not _same(float(value), ours, tolerance(metric)):
            _fail(f"{path}: metric {metric!r} is reported as {float(value):.6f} but rescoring the samples gives "
                  f"{ours:.6f} (difference {abs(float(value) - ours):.2e} > tolerance {tolerance(metric):g})")
        reported[metric] = float(value)
        diffs[metric] = 0.0 if math.isnan(ours) else abs(float(value) - ours)
    return reported, diffs


# ---------------------------------------------------------------------------------------------
# Plausibility and reproduction

# Results no model of the benchmark's kind plausibly reaches. Crossing one does not reject a
# submission (a much better model may exist); it marks the entry "needs reproduction" until a
# reproduction record shows that the model regenerates its responses. For scale: SmolLM2-135M
# scores ROUGE-L 0.21, EM 0.20; the paper's best 8B model ROUGE-L 0.54, EM 0.25.
PLAUSIBLE_MAX = {"rougeL": 0.9, "bleu": 0.9, "em": 0.9, "rs": 0.95}
PLAUSIBLE_REFERENCE_SHARE = 0.5  # share of responses equal to their reference (after stripping)
PLAUSIBLE_IDENTICAL_GROUPS = 0.9  # share of groups whose responses are all identical (after stripping)


def plausibility(spec: TaskSpec, responses: dict[str, str], metrics: dict[str, float]) -> list[str]:
    """The plausibility bounds these results cross (empty: none)."""
    out = []
    for metric, bound in PLAUSIBLE_MAX.items():
        value = metrics.get(metric)
        if value is not None and not math.isnan(value) and value >= bound:
            out.append(f"{metric} {value:.3f} >= {bound:g}")
    equal = sum(responses[d["id"]].strip() == d["reference"].strip() for d in spec.docs) / len(spec.docs)
    if equal >= PLAUSIBLE_REFERENCE_SHARE:
        out.append(f"{equal:.0%} of responses equal their reference (bound {PLAUSIBLE_REFERENCE_SHARE:.0%})")
    groups: dict[str, set[str]] = {}
    for d in spec.docs:
        groups.setdefault(d["group_id"], set()).add(responses[d["id"]].strip())
    same = sum(len(v) == 1 for v in groups.values()) / len(groups)
    if same >= PLAUSIBLE_IDENTICAL_GROUPS:
        out.append(f"{same:.0%} of groups answer every question identically (bound {PLAUSIBLE_IDENTICAL_GROUPS:.0%})")
    return out


def submission_sha256(directory: Path, meta: SubmissionMetadata) -> str:
    """The content hash a reproduction is bound to: the results JSON's bytes, the samples' text
    (decompressed) and the metadata's model description. Editing any of them makes an existing
    reproduction record stale; the reproduction's seed derives from it."""
    h = hashlib.sha256()
    h.update(b"consistbench-submission-v1\n")
    h.update(untrusted.content_sha256(directory / meta.files.results, _read_limits("results"), what="results JSON",
                                      follow_symlinks=False).encode())
    h.update(untrusted.content_sha256(directory / meta.files.samples, _read_limits("samples"), what="samples file",
                                      follow_symlinks=False).encode())
    h.update(json.dumps(meta.model.model_dump(mode="json"), sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


def _reproduction(directory: Path, spec: TaskSpec, content_sha: str) -> ReproductionRecord | None:
    """The submission's reproduction record, checked against these files; None when there is none."""
    from pydantic import ValidationError

    from consistbench.leaderboard.reproduce import choose_groups, plan_sample, sample_seed, verdict_of

    path = directory / REPRODUCTION_FILE
    if not path.is_symlink() and not path.exists():
        return None
    _inside(directory, REPRODUCTION_FILE, "reproduction record")
    _check_size(path, LIMITS["reproduction"], "reproduction record")
    raw = _load_json(path, "reproduction record", "reproduction")
    try:
        rec = ReproductionRecord.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        _fail(f"{path}: {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}")
    if rec.submission_sha256 != content_sha:
        _fail(f"{path}: the reproduction record is for other files (content {rec.submission_sha256[:16]}..., these "
              f"files are {content_sha[:16]}...): run consistbench leaderboard reproduce again")
    if rec.task != spec.name:
        _fail(f"{path}: the reproduction record is for task {rec.task!r}, the submission is on {spec.name!r}")
    p = rec.plan
    expected = plan_sample(spec, p.forged_share, p.power, p.tolerated_share, p.confidence)
    if p != expected:
        _fail(f"{path}: the record's sampling plan does not follow from its own parameters (expected "
              f"{expected.sample_groups} groups, at most {expected.max_mismatched_groups} mismatched)")
    if rec.seed != sample_seed(content_sha, rec.salt) or rec.groups != choose_groups(spec, rec.seed, p.sample_groups):
        _fail(f"{path}: the record's groups are not the seeded sample of this submission (seed from its content hash"
              + (f" and salt {rec.salt!r})" if rec.salt else ")"))
    if rec.verdict != verdict_of(rec):
        _fail(f"{path}: the record's verdict {rec.verdict!r} does not follow from its own figures")
    if rec.verdict != "reproduced":
        _fail(f"{path}: the reproduction did not reproduce the logged responses ({rec.mismatched_groups} of "
              f"{len(rec.groups)} sampled groups differ, {rec.exact_matches} of {rec.compared_docs} responses "
              "identical): " + "; ".join(rec.reasons))
    return rec


def validate_submission(directory: str | Path, task: str | None = None, *, reproduction: bool = True) -> Validated:
    """Run every check on one submission directory; raise ConsistbenchError on the first failure.

    ``task``: the track the submission must be on; None accepts any track in :data:`TRACKS`.
    ``reproduction=False``: ignore a reproduction record (``reproduce`` replaces it anyway).
    """
    directory = Path(directory)
    if directory.is_symlink():
        _fail(f"{directory}: the submission directory is a symbolic link (refused: a submission is a plain "
              "directory; the site would copy whatever it points to)")
    if not directory.is_dir():
        _fail(f"{directory}: not a directory")
    meta = _metadata(directory)
    results_path = _inside(directory, meta.files.results, "results")
    samples_path = _inside(directory, meta.files.samples, "samples")
    _check_size(results_path, LIMITS["results"], "results")
    if samples_path.name.endswith(".gz"):
        _check_size(samples_path, LIMITS["samples_compressed"], "samples")
    else:
        _check_size(samples_path, LIMITS["samples"], "samples")
    if not (samples_path.name.endswith(".jsonl") or samples_path.name.endswith(".jsonl.gz")):
        _fail(f"{samples_path}: samples file must be .jsonl or .jsonl.gz")
    res, task = _results_task(results_path, task)
    spec = load_task(task, frozen_version_of(res, task))
    _results(results_path, res, spec)
    prompts = prompt_format(results_path, res)
    recorded_params = (res.get("config") or {}).get("model_num_parameters")
    if isinstance(recorded_params, int) and recorded_params > 0 and recorded_params != meta.model.parameters:
        _fail(f"{directory / METADATA_FILE}: model.parameters {meta.model.parameters} differs from the "
              f"{recorded_params} lm-eval recorded for the model")
    responses = _samples(samples_path, spec, prompts)
    rescored, n_pairs = rescore(spec, responses)
    reported, diffs = compare(results_path, spec, res, rescored)
    content_sha = submission_sha256(directory, meta)
    record = _reproduction(directory, spec, content_sha) if reproduction else None
    implausible = plausibility(spec, responses, rescored)
    level = "reproduced" if record is not None else ("needs reproduction" if implausible else "rescored")
    robust = _validate_robust(directory, meta, res, results_path, spec.name)
    files = ([METADATA_FILE, meta.files.results, meta.files.samples] + _robust_files(meta)
             + ([REPRODUCTION_FILE] if record else []))
    return Validated(directory=directory, metadata=meta, task=spec.name, data_sha256=spec.data_sha256,
                     task_version=spec.version, n_docs=len(spec.docs), n_pairs=n_pairs,
                     metrics={m: rescored[m] for m in spec.metrics} | robust[0], reported=reported | robust[1],
                     max_diff=diffs | robust[2],
                     lm_eval_version=res.get("lm_eval_version"),
                     model_args=(res.get("config") or {}).get("model_args"), responses=responses,
                     verification=level, implausible=implausible, reproduction=record, files=files,
                     content_sha256=content_sha, prompts=prompts, robust_responses=robust[3])


def read_submission_file(v: Validated, name: str) -> bytes:
    """The bytes of one validated submission file, read again without following links and
    within the size limits (the site copies them)."""
    path = v.directory / name
    limit = {METADATA_FILE: LIMITS["metadata"], REPRODUCTION_FILE: LIMITS["reproduction"],
             v.metadata.files.results: LIMITS["results"]}.get(
        name, LIMITS["samples_compressed"] if name.endswith(".gz") else LIMITS["samples"])
    size = path.stat(follow_symlinks=False).st_size
    if size > limit:
        _fail(f"{path}: grew above its size limit after validation")
    with untrusted.open_regular(path, follow_symlinks=False, what="submission file") as fh:
        data = fh.read(size + 1)
    if len(data) != size:
        _fail(f"{path}: changed while the site was built")
    return data


# ---------------------------------------------------------------------------------------------
# Robust families (consistbench.leaderboard.robust): optional tasks beside the track's task

def _robust_tasks(res: dict) -> list[str]:
    from consistbench.leaderboard.robust import robust_tasks_in

    return robust_tasks_in(res)


def _prompt_parts(spec: TaskSpec):
    """For a task, a function giving a document's ``(doc_to_text, system message)``: the track's
    tasks use the benchmark prompt; the template task renders each document under its template,
    whose preamble lm-eval sends as the ``description`` (the system message)."""
    from consistbench.benchmark.prompting import prompt_text
    from consistbench.benchmark.variants.template import render_doc

    if "doc_to_text_templated" in str(spec.config.get("doc_to_text") or ""):
        return lambda doc: (render_doc(doc), (doc.get("system") or ""))
    return lambda doc: (prompt_text(doc["context"], doc["question"]), "")


def _robust_files(meta: SubmissionMetadata) -> list[str]:
    from consistbench.leaderboard.robust import robust_files

    return robust_files(meta)


def _validate_robust(directory: Path, meta: SubmissionMetadata, res: dict, results_path: Path, track: str):
    from consistbench.leaderboard.robust import validate_robust

    return validate_robust(directory, meta, res, results_path, track)
