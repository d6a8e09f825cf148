"""Checks before merging: every input must be mergeable with the base, else one clear error.

In order, over all models (the first failure is reported, naming the model and the mismatch):

1. files: a folder with ``config.json`` and safetensors weights, every shard the index lists
   (done by :class:`consistbench.reference_method.merge.io.LazyModel` when a model is opened);
2. architecture: the same ``model_type``, ``architectures`` and structural config values
   (:data:`STRUCTURE_KEYS`);
3. vocabulary: the same tokenizer vocabulary (token -> id, added tokens included);
4. tensor names: the same set of tensors;
5. shapes: the same shape for every tensor;
6. tokenizer set-up: part 1's doctor (``consistbench.reference_method.doctor.check``) must find the same
   problems in every input as in the base, whose tokenizer the merged model takes (only run
   for inputs whose tokenizer files are not byte-identical to the base's).

Dtypes may differ (everything is computed in float32).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method import doctor
from consistbench.reference_method.merge.io import LazyModel

STRUCTURE_KEYS = ("model_type", "architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings",
                  "hidden_act", "attention_bias", "mlp_bias")


def check_architecture(ref: LazyModel, other: LazyModel) -> None:
    for key in STRUCTURE_KEYS:
        a, b = ref.config.get(key), other.config.get(key)
        if a != b:
            raise ConsistbenchError(f"architecture mismatch: config.json {key} is {a!r} in {ref.label} "
                                    f"but {b!r} in {other.label}")


def tokenizer_vocab(path: str | Path) -> dict[str, int]:
    """Token -> id of a model folder's tokenizer (added tokens included).

    Read from ``tokenizer.json`` directly when present (fast, no transformers import); other
    tokenizer formats go through ``transformers.AutoTokenizer``.
    """
    path = Path(path)
    tj = path / "tokenizer.json"
    if tj.is_file():
        try:
            data = json.loads(tj.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConsistbenchError(f"{tj}: invalid JSON ({exc.msg})") from None
        vocab = (data.get("model") or {}).get("vocab")
        if isinstance(vocab, dict):
            out = {str(k): int(v) for k, v in vocab.items()}
        elif isinstance(vocab, list):  # Unigram: [[piece, score], ...]
            out = {str(entry[0]): i for i, entry in enumerate(vocab)}
        else:
            raise ConsistbenchError(f"{tj}: no model.vocab")
        for tok in data.get("added_tokens") or []:
            out[str(tok["content"])] = int(tok["id"])
        return out
    files = ("tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")
    if not any((path / f).is_file() for f in files):
        raise ConsistbenchError(f"cannot check the vocabulary: no tokenizer files in {path} "
                                "(save the tokenizer it was trained with beside its weights)")
    from transformers import AutoTokenizer

    try:
        return dict(AutoTokenizer.from_pretrained(str(path)).get_vocab())
    except Exception as exc:  # noqa: BLE001 - any loader failure is the user's input problem
        raise ConsistbenchError(f"cannot load the tokenizer in {path}: {exc}") from None


def check_vocabulary(ref: LazyModel, ref_vocab: Callable[[], dict[str, int]], other: LazyModel) -> None:
    """``ref_vocab()`` returns the reference vocabulary (parsed only if a file differs)."""
    same, mine = ref.path / "tokenizer.json", other.path / "tokenizer.json"
    if same.is_file() and mine.is_file() and same.stat().st_size == mine.stat().st_size \
            and same.read_bytes() == mine.read_bytes():
        return  # byte-identical tokenizer files: nothing to compare
    vocab = tokenizer_vocab(other.path)
    ref_vocab = ref_vocab()
    if vocab == ref_vocab:
        return
    for token, idx in sorted(ref_vocab.items(), key=lambda kv: kv[1]):
        if token not in vocab:
            raise ConsistbenchError(f"vocabulary mismatch: token {token!r} (id {idx}) of {ref.label} "
                                    f"is not in {other.label}'s tokenizer")
        if vocab[token] != idx:
            raise ConsistbenchError(f"vocabulary mismatch: token {token!r} is id {idx} in {ref.label} "
                                    f"but id {vocab[token]} in {other.label}")
    extra = sorted(set(vocab) - set(ref_vocab), key=lambda t: vocab[t])
    raise ConsistbenchError(f"vocabulary mismatch: {other.label}'s tokenizer has token {extra[0]!r} "
                            f"(id {vocab[extra[0]]}) that {ref.label} lacks ({len(vocab)} vs {len(ref_vocab)} tokens)")


def check_tensors(ref: LazyModel, other: LazyModel) -> None:
    missing = [n for n in ref.tensors if n not in other.tensors]
    if missing:
        raise ConsistbenchError(f"tensor names differ: {other.label} lacks {missing[0]} "
                                f"({len(missing)} of {ref.label}'s tensors missing)")
    extra = [n for n in other.tensors if n not in ref.tensors]
    if extra:
        raise ConsistbenchError(f"tensor names differ: {other.label} has {extra[0]}, which {ref.label} lacks "
                                f"({len(extra)} extra)")


def check_shapes(ref: LazyModel, other: LazyModel) -> None:
    for name, info in ref.tensors.items():
        shape = other.tensors[name].shape
        if shape != info.shape:
            raise ConsistbenchError(f"shape mismatch: {name} is {list(info.shape)} in {ref.label} "
                                    f"but {list(shape)} in {other.label}")


IGNORED_DOCTOR_CODES = ("generation_config",)


def _same_files(a: Path, b: Path, names: tuple[str, ...]) -> bool:
    for name in names:
        fa, fb = a / name, b / name
        if fa.is_file() != fb.is_file():
            return False
        if fa.is_file() and (fa.stat().st_size != fb.stat().st_size or fa.read_bytes() != fb.read_bytes()):
            return False
    return True


def doctor_hook(ref: LazyModel, others: list[LazyModel]) -> None:
    """Part 1's tokenizer doctor (``consistbench.reference_method.doctor.check``) across the inputs.

    The merged model gets the base's tokenizer and generation config, so every input must have
    been trained with the same tokenizer set-up: a fine-tune whose doctor findings differ from
    the base's (say its pad token was fixed with ``consistbench doctor --fix`` and the base's
    was not) is an error. Inputs whose tokenizer and generation files are byte-identical to the
    base's are skipped (same findings by construction), so the usual case costs nothing.
    """
    files = tuple(f for f in doctor.TOKENIZER_FILES if f != "generation_config.json")
    differing = [o for o in others if not _same_files(ref.path, o.path, files)]
    if not differing:
        return

    def codes_of(path):  # the merged model takes the base's generation config: only tokenizer findings count
        return {f.code: f for f in doctor.check(path) if f.code not in IGNORED_DOCTOR_CODES}

    ref_codes = codes_of(ref.path)
    for other in differing:
        codes = codes_of(other.path)
        if set(codes) != set(ref_codes):
            only_ref = sorted(set(ref_codes) - set(codes))
            only_other = sorted(set(codes) - set(ref_codes))
            what = (f"{only_ref[0]} in {ref.label} but not in {other.label}" if only_ref
                    else f"{only_other[0]} in {other.label} but not in {ref.label}")
            raise ConsistbenchError(f"tokenizer set-up differs (consistbench doctor finds {what}): the merged "
                                    "model takes the base's tokenizer, so fix the base and the fine-tunes alike")


def check_models(ref: LazyModel, others: list[LazyModel], *, vocabulary: bool = True) -> None:
    """All checks of this module, one kind at a time over all models (first failure raised)."""
    for other in others:
        check_architecture(ref, other)
    if vocabulary:
        ref_vocab = functools.lru_cache(maxsize=1)(lambda: tokenizer_vocab(ref.path))
        for other in others:
            check_vocabulary(ref, ref_vocab, other)
    for other in others:
        check_tensors(ref, other)
    for other in others:
        check_shapes(ref, other)
    doctor_hook(ref, others)
