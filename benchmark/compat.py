"""Every use of another library's private API, in one place, behind a version check.

consistbench reaches into a few libraries where their public API does not offer what it needs
(each shim below says why). Private APIs change without notice, so ``pyproject.toml`` bounds
each of these libraries to the minor versions listed in :data:`SUPPORTED`, and each shim checks
the installed version before it touches anything: an unsupported version fails with one clear
line naming the library, the version found and the range supported, instead of an
``AttributeError`` deep inside a run. Keep :data:`SUPPORTED` and the bounds in pyproject equal
(a test compares them).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from consistbench.benchmark.errors import ConsistbenchError

# distribution -> (specifier, what of it we use privately)
SUPPORTED: dict[str, tuple[str, str]] = {
    "rouge-score": (">=0.1.2,<0.2", "RougeScorer._tokenizer and rouge_scorer._score_lcs"),
    "sacrebleu": (">=2.6,<2.7", "BLEU._extract_corpus_statistics"),
    "peft": (">=0.21,<0.22", "the module file peft/utils/merge_utils.py"),
    "trl": (">=1.16,<1.17", "DPOTrainer._prepare_dataset / _precompute_ref_logps and trl.trainer.utils"),
    "lm-eval": (">=0.4.13,<0.4.14", "lm_eval.tasks._yaml_loader and HFLM._rank / _world_size"),
}


@functools.lru_cache(maxsize=None)
def require(dist: str) -> str:
    """The installed version of ``dist``; a ConsistbenchError if it is outside :data:`SUPPORTED`."""
    spec, used = SUPPORTED[dist]
    try:
        version = metadata.version(dist)
    except metadata.PackageNotFoundError:
        raise ConsistbenchError(f"{dist} is not installed (consistbench needs {dist}{spec}: `make setup`)") from None
    if Version(version) not in SpecifierSet(spec):
        raise ConsistbenchError(f"{dist} {version} is installed, but consistbench supports {dist}{spec} only "
                                f"(it uses {used}, which may change between minor versions): "
                                f"pip install '{dist}{spec}'")
    return version


# ---------------------------------------------------------------------------------------------
# rouge-score: its public ``RougeScorer.score`` re-tokenises and re-stems both strings on every
# call; scoring every pair of a run that way costs most of the scoring time. Its tokenizer and
# LCS function are what ``score`` itself calls, so cached tokens give identical numbers.

def rouge_tokenize(scorer, text: str) -> list[str]:
    """``scorer``'s own tokenisation (lower-cased, stemmed tokens), as ``RougeScorer.score`` uses it."""
    require("rouge-score")
    return scorer._tokenizer.tokenize(text)


def rouge_lcs(target_tokens, prediction_tokens):
    """rouge-score's ``Score`` (precision, recall, fmeasure) of the LCS of two token lists."""
    require("rouge-score")
    from rouge_score.rouge_scorer import _score_lcs

    return _score_lcs(target_tokens, prediction_tokens)


# ---------------------------------------------------------------------------------------------
# sacrebleu: corpus BLEU is a function of summed per-sentence statistics; the bootstrap needs the
# statistics themselves, which only the private ``_extract_corpus_statistics`` returns.

def bleu_sentence_statistics(bleu, predictions: list[str], references: list[list[str]]):
    """sacrebleu's per-sentence BLEU statistics (lengths, matched and total n-grams)."""
    require("sacrebleu")
    return bleu._extract_corpus_statistics(predictions, references)


# ---------------------------------------------------------------------------------------------
# peft: the merge operations (task_arithmetic, ties, dare_*) live in peft.utils.merge_utils,
# which imports only torch; importing it through ``peft`` loads all of peft and transformers.
# The module file is loaded on its own when it is where this version keeps it.

@functools.lru_cache(maxsize=1)
def peft_merge_utils() -> ModuleType:
    """The ``peft.utils.merge_utils`` module (loaded standalone when possible)."""
    require("peft")
    spec = importlib.util.find_spec("peft")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "utils" / "merge_utils.py"
        if path.is_file():
            name = "consistbench_peft_merge_utils"
            file_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(file_spec)
            sys.modules[name] = module
            file_spec.loader.exec_module(module)
            return module
    from peft.utils import merge_utils as module  # pragma: no cover - layout changed

    return module


# ---------------------------------------------------------------------------------------------
# TRL: the preference trainers subclass DPOTrainer and replace two private hooks (its own data
# preparation and its reference log-prob pass: the data already carries both).

TRL_HOOKS = ("_prepare_dataset", "_precompute_ref_logps", "compute_loss")


def check_trl_hooks(trainer_class) -> None:
    """Fail clearly if TRL's DPOTrainer no longer has the hooks the preference trainers override."""
    require("trl")
    missing = [h for h in TRL_HOOKS if not callable(getattr(trainer_class, h, None))]
    if missing:
        raise ConsistbenchError(f"trl's {trainer_class.__name__} has no {missing[0]}: the installed trl is not one "
                                f"this version of consistbench supports ({SUPPORTED['trl'][0]})")


def trl_add_fused_lm_head(model) -> None:
    """TRL's helper that gives a model the fused LM head its DPO loss expects."""
    require("trl")
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model)


# ---------------------------------------------------------------------------------------------
# lm-eval: its YAML loader (``!function`` tags, ``include``) has no public entry point; and its
# HF model enables data parallelism only with several GPUs, so ranks on CPU are set by hand.

def lm_eval_load_yaml(path, *, resolve_func: bool = False) -> dict:
    """A task YAML read by lm-eval's own loader (includes resolved)."""
    require("lm-eval")
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(path, resolve_func=resolve_func)


def set_lm_eval_rank(lm, rank: int, world_size: int) -> None:
    """Make an lm-eval ``HFLM`` shard its requests as rank ``rank`` of ``world_size``."""
    require("lm-eval")
    lm._rank = rank
    lm._world_size = world_size
