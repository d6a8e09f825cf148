"""``consistbench doctor MODEL_DIR [--fix OUT]``: tokenizer and generation traps, found before training.

Checks (code, severity, what ``--fix`` does):

- ``no_pad_token`` (error): batches cannot be padded. Fix: a distinct pad token (below).
- ``pad_eq_eos`` (error): the pad token is the eos token. A collator that masks padding by
  ``labels == pad_token_id`` then masks every eos too, and the model never learns to stop
  (SmolLM2-Instruct ships this way: pad = eos = ``<|im_end|>``). Fix: a distinct pad token, in
  this order: ``--pad-token``; an existing special token whose name contains "pad"; the unk
  token; a new ``<|pad|>`` (embeddings resized, the only case that rewrites weights). Never the
  bos/eos or a token the chat template writes. ``config.json`` and ``generation_config.json``
  get the new ``pad_token_id``.
- ``special_token_split`` (error): a special token written as text is not encoded as its one id
  (seen with ``normalized=True`` and a context-dependent normaliser such as ``Prepend``): the
  chat template's own markers then reach the model as pieces. Fix: ``normalized=False``.
- ``special_tokens_normalized`` (warning): special tokens marked ``normalized=True`` that do
  not split with this normaliser today; the flag is still a trap if the normaliser changes.
  Fix: ``normalized=False``.
- ``no_chat_template`` (warning): training and ``consistbench eval`` then both use the raw
  prompt, but ``lm_eval --apply_chat_template`` fails on the model. Fix: ``--chat-template
  FILE``, or by default :data:`COMPLETION_TEMPLATE`, which renders a single user turn exactly
  as the raw prompt and ends an assistant turn with " " + content + eos: same tokens as now,
  made explicit.
- ``generation_config`` (warning): the model's own generation settings differ from the
  benchmark's evaluation (greedy, ``max_new_tokens = benchmark.prompting.MAX_GEN_TOKS``, stop at
  the tokenizer's eos, the tokenizer's pad id), so a plain ``model.generate()`` does not produce
  what was trained and scored. Fix: write those settings to ``generation_config.json``.

``--fix OUT`` writes a corrected copy to ``OUT`` atomically (temporary directory, renamed on
success) and re-checks it; the source folder is never modified. Weight files are copied byte for
byte unless a new pad token needs a row in the embeddings.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import atomic_path
from consistbench.benchmark.prompting import MAX_GEN_TOKS

COMPLETION_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}{{ ' ' + message['content'] + eos_token }}"
    "{%- else -%}{%- if not loop.first -%}{{ '\\n\\n' }}{%- endif -%}{{ message['content'] }}{%- endif -%}"
    "{%- endfor -%}"
)
NEW_PAD_TOKEN = "<|pad|>"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "chat_template.jinja", "chat_template.json", "generation_config.json")
_PROBES = ("Hi{}", "a b {}\nc", "{} x")


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str  # "error" | "warning"
    message: str
    fix: str

    def to_json(self) -> dict:
        return asdict(self)


def load_tokenizer(model_dir: str | Path, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ConsistbenchError(f"{model_dir}: no such model directory")
    try:
        return AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    except ConsistbenchError:
        raise
    except Exception as exc:  # transformers raises many types for a broken or missing tokenizer
        raise ConsistbenchError(f"{model_dir}: cannot load the tokenizer ({type(exc).__name__}: {exc})") from None


def load_generation_config(model_dir: str | Path, *, trust_remote_code: bool = False):
    from transformers import AutoConfig, GenerationConfig

    model_dir = Path(model_dir)
    if (model_dir / "generation_config.json").is_file():
        try:
            return GenerationConfig.from_pretrained(str(model_dir))
        except Exception as exc:
            raise ConsistbenchError(f"{model_dir}/generation_config.json: unreadable ({exc})") from None
    try:
        config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ConsistbenchError(f"{model_dir}: cannot read config.json ({type(exc).__name__}: {exc})") from None
    return GenerationConfig.from_model_config(config)


def _ids(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def split_special_tokens(tok) -> list[str]:
    """Special tokens that, written as text inside a sentence, do not come out as their own id."""
    broken = []
    for tid, token in sorted(tok.added_tokens_decoder.items()):
        if not token.special:
            continue
        for probe in _PROBES:
            if tid not in tok(probe.format(token.content), add_special_tokens=False)["input_ids"]:
                broken.append(token.content)
                break
    return broken


def check_tokenizer(tok) -> list[Finding]:
    out: list[Finding] = []
    if tok.pad_token is None:
        out.append(Finding("no_pad_token", "error", "the tokenizer has no pad token",
                           "add a distinct pad token"))
    elif tok.eos_token is not None and tok.pad_token_id == tok.eos_token_id:
        out.append(Finding("pad_eq_eos", "error",
                           f"pad token == eos token ({tok.eos_token!r}, id {tok.eos_token_id}): padding masks the eos "
                           "and a fine-tuned model never learns to stop",
                           "use a distinct pad token"))
    split = split_special_tokens(tok)
    if split:
        out.append(Finding("special_token_split", "error",
                           f"special tokens written as text are split into pieces: {', '.join(split)}",
                           "set normalized=False on special tokens"))
    normalized = [t.content for _, t in sorted(tok.added_tokens_decoder.items()) if t.special and t.normalized]
    if normalized and not split:
        out.append(Finding("special_tokens_normalized", "warning",
                           f"special tokens with normalized=True (matched after normalisation, split by some "
                           f"normalisers): {', '.join(normalized)}",
                           "set normalized=False on special tokens"))
    if not getattr(tok, "chat_template", None):
        out.append(Finding("no_chat_template", "warning",
                           "no chat template: training and evaluation use the raw prompt, and "
                           "`lm_eval --apply_chat_template` fails on this model",
                           "install a chat template (--chat-template FILE, default a completion template that "
                           "renders the raw prompt)"))
    return out


def eval_generation_differences(gen, tok) -> list[str]:
    """How ``gen`` differs from the benchmark's evaluation settings (empty when it matches)."""
    diffs = []
    if gen.do_sample:
        diffs.append("do_sample=True (evaluation is greedy)")
    if (gen.num_beams or 1) != 1:
        diffs.append(f"num_beams={gen.num_beams} (evaluation is greedy, one beam)")
    if gen.max_new_tokens != MAX_GEN_TOKS:
        limit = f"max_length={gen.max_length}" if gen.max_length is not None else "transformers' default max_length (20)"
        now = f"max_new_tokens={gen.max_new_tokens}" if gen.max_new_tokens is not None else \
            f"max_new_tokens unset (plain generate() stops at {limit} tokens, prompt included)"
        diffs.append(f"{now}, evaluation generates up to {MAX_GEN_TOKS}")
    if tok.eos_token_id is not None and tok.eos_token_id not in _ids(gen.eos_token_id):
        diffs.append(f"eos_token_id={gen.eos_token_id} does not stop at the tokenizer's eos {tok.eos_token!r} "
                     f"(id {tok.eos_token_id}), the token the trainer teaches")
    if tok.pad_token_id is not None and gen.pad_token_id is not None and gen.pad_token_id != tok.pad_token_id:
        diffs.append(f"pad_token_id={gen.pad_token_id} differs from the tokenizer's {tok.pad_token_id}")
    return diffs


def eval_generation_config(tok, base=None):
    """A ``GenerationConfig`` with the benchmark's evaluation settings (keeps ``base``'s other fields)."""
    from transformers import GenerationConfig

    gen = GenerationConfig.from_dict(base.to_dict()) if base is not None else GenerationConfig()
    gen.do_sample = False
    gen.num_beams = 1
    gen.temperature = gen.top_p = gen.top_k = None
    gen.max_new_tokens = MAX_GEN_TOKS
    eos = _ids(gen.eos_token_id)
    if tok.eos_token_id is not None and tok.eos_token_id not in eos:
        eos = [tok.eos_token_id, *eos]
    gen.eos_token_id = eos[0] if len(eos) == 1 else (eos or None)
    gen.pad_token_id = tok.pad_token_id
    if tok.bos_token_id is not None:
        gen.bos_token_id = tok.bos_token_id
    return gen


def check(model_dir: str | Path, *, trust_remote_code: bool = False) -> list[Finding]:
    """Every check on a model folder (tokenizer, chat template, generation config); reads no weights."""
    tok = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    findings = check_tokenizer(tok)
    diffs = eval_generation_differences(load_generation_config(model_dir, trust_remote_code=trust_remote_code), tok)
    if diffs:
        findings.append(Finding("generation_config", "warning",
                                "generation settings differ from evaluation: " + "; ".join(diffs),
                                f"write greedy, max_new_tokens={MAX_GEN_TOKS}, the tokenizer's eos and pad to "
                                "generation_config.json"))
    return findings


def choose_pad_token(tok, requested: str | None = None, avoid_ids: tuple[int, ...] = ()) -> tuple[str, bool]:
    """(pad token, whether it is new to the vocabulary)."""
    template = tok.chat_template or ""
    avoid = {t for t in (tok.eos_token, tok.bos_token) if t}
    avoid |= {tok.convert_ids_to_tokens(i) for i in avoid_ids}
    vocab = tok.get_vocab()
    if requested:
        if requested in avoid or (requested in template and requested in vocab):
            raise ConsistbenchError(f"pad token {requested!r} is the bos/eos or used by the chat template")
        return requested, requested not in vocab
    specials = [t.content for _, t in sorted(tok.added_tokens_decoder.items()) if t.special]
    usable = [c for c in specials if c not in avoid and c not in template]
    for c in usable:
        if "pad" in c.lower():
            return c, False
    if tok.unk_token and tok.unk_token in usable:
        return tok.unk_token, False
    return NEW_PAD_TOKEN, NEW_PAD_TOKEN not in vocab


def _patch_normalized(folder: Path) -> None:
    """Set normalized=False on every special added token in the saved tokenizer files."""
    path = folder / "tokenizer.json"
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        for tok in data.get("added_tokens", []):
            if tok.get("special"):
                tok["normalized"] = False
        path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    path = folder / "tokenizer_config.json"
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        for tok in (data.get("added_tokens_decoder") or {}).values():
            if isinstance(tok, dict) and tok.get("special"):
                tok["normalized"] = False
        path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")


def fix(model_dir: str | Path, out_dir: str | Path, *, pad_token: str | None = None, chat_template: str | None = None,
        trust_remote_code: bool = False) -> tuple[list[str], list[Finding]]:
    """Write a corrected copy of ``model_dir`` to ``out_dir``; return (actions taken, findings left)."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.resolve() == model_dir.resolve():
        raise ConsistbenchError("--fix writes a copy: give an output directory other than the model directory")
    findings = check(model_dir, trust_remote_code=trust_remote_code)
    codes = {f.code for f in findings}
    tok = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    gen = load_generation_config(model_dir, trust_remote_code=trust_remote_code)
    actions: list[str] = []
    resize = False
    if codes & {"pad_eq_eos", "no_pad_token"} or pad_token:
        from tokenizers import AddedToken

        choice, new = choose_pad_token(tok, pad_token, tuple(_ids(gen.eos_token_id)))
        if new:
            tok.add_special_tokens({"pad_token": AddedToken(choice, normalized=False, special=True)})
            resize = True
        else:
            tok.pad_token = choice
        actions.append(f"pad token -> {choice!r} (id {tok.pad_token_id}{', new: embeddings resized' if new else ''})")
    if chat_template is not None or "no_chat_template" in codes:
        tok.chat_template = chat_template if chat_template is not None else COMPLETION_TEMPLATE
        actions.append("chat template installed" + (" (from file)" if chat_template is not None else
                                                     " (completion template: renders the raw prompt)"))
    patch_norm = bool(codes & {"special_token_split", "special_tokens_normalized"})
    if patch_norm:
        actions.append("special tokens set to normalized=False")
    with atomic_path(out_dir, is_dir=True) as tmp:
        if resize:
            _resized_copy(model_dir, tmp, tok, trust_remote_code)
        else:
            for src in sorted(model_dir.iterdir()):
                if src.is_file() and src.name not in TOKENIZER_FILES:
                    shutil.copy2(src, tmp / src.name)
            _set_config_pad(tmp / "config.json", tok.pad_token_id)
        tok.save_pretrained(str(tmp))
        if patch_norm:
            _patch_normalized(tmp)
        eval_generation_config(tok, gen).save_pretrained(str(tmp))
        if "generation_config" in codes:
            actions.append(f"generation_config.json: greedy, max_new_tokens={MAX_GEN_TOKS}, eos and pad of the tokenizer")
        left = check(tmp, trust_remote_code=trust_remote_code)
        errors = [f for f in left if f.severity == "error"]
        if errors:
            raise ConsistbenchError(f"the fixed copy still fails: {errors[0].message}")
    return actions, left


def _set_config_pad(path: Path, pad_id: int | None) -> None:
    if not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("pad_token_id") != pad_id:
        data["pad_token_id"] = pad_id
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _resized_copy(model_dir: Path, tmp: Path, tok, trust_remote_code: bool) -> None:
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ConsistbenchError(f"{model_dir}: cannot load the model to add a pad token ({exc})") from None
    model.resize_token_embeddings(len(tok))
    model.config.pad_token_id = tok.pad_token_id
    model.save_pretrained(str(tmp))
    for src in sorted(model_dir.iterdir()):  # README, licence and the like travel with the weights
        if src.is_file() and not (tmp / src.name).exists() and src.name not in TOKENIZER_FILES \
                and not src.name.endswith((".safetensors", ".bin", ".index.json")):
            shutil.copy2(src, tmp / src.name)


def format_report(model_dir: str | Path, findings: list[Finding]) -> str:
    if not findings:
        return f"{model_dir}: no problems found"
    lines = [f"{model_dir}: {len(findings)} problem(s)"]
    for f in findings:
        lines.append(f"  [{f.severity}] {f.code}: {f.message}")
        lines.append(f"      fix: {f.fix}")
    return "\n".join(lines)


def check_architecture(model_dir: str | Path, *, trust_remote_code: bool = False):
    """The model's config, if it is a causal LM this trainer supports; else a ConsistbenchError."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ConsistbenchError(f"{model_dir}: not a model directory (no config.json)")
    try:
        config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    except Exception as exc:
        hint = "" if trust_remote_code else " (custom model code needs --trust-remote-code)"
        raise ConsistbenchError(f"{model_dir}: unsupported model ({type(exc).__name__}: {str(exc)[:200]}){hint}") from None
    remote = trust_remote_code and "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {})
    causal_classes = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    archs = list(getattr(config, "architectures", None) or [])
    supported = remote or (not getattr(config, "is_encoder_decoder", False)
                           and config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
                           and any(a in causal_classes for a in archs))
    if not supported:
        arch = ", ".join(archs) or "none recorded"
        raise ConsistbenchError(f"{model_dir}: unsupported architecture ({arch}; model_type {config.model_type!r}): "
                                "the trainer needs a decoder-only causal LM saved with its LM head "
                                "(an AutoModelForCausalLM class such as LlamaForCausalLM)")
    return config
