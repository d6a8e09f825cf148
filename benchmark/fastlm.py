"""``consistbench-hf``: lm-eval's HF model with a faster ``generate_until`` (prefix reuse, continuous batching).

It is lm-eval's ``HFLM`` in every respect (model and tokenizer loading, chat template, request
format, log-likelihood requests, results and samples files) except greedy ``generate_until``,
which runs :class:`consistbench.benchmark.fastgen.PrefixGenerator` and then post-processes each
answer exactly as ``HFLM`` does (decode without special tokens, cut at the first stop string).
Requests it cannot serve exactly (sampling, generation settings that add logits processors, a
thinking-token split, layer kinds other than full or sliding-window attention,
encoder-decoder models) go to ``HFLM.generate_until`` with a warning, never silently.

Model arguments on top of ``HFLM``'s (``pretrained=...,dtype=...``):

- ``decode_slots`` (32): rows decoded together; ``prefix_min_saved`` (32): the fewest prompt
  tokens a shared prefix must save to be computed once; ``admit_min`` (4): free slots gathered
  before admitting new rows.
- ``quantize=int8``: torch dynamic int8 quantisation of the linear layers (measured as a candidate;
  it changes the answers too much to be a tier, see docs/PERFORMANCE.md).

Registered with lm-eval under ``consistbench-hf``: importing this module is enough for
``lm_eval.simple_evaluate(model="consistbench-hf", ...)``; for the lm-eval command line use
``python -m consistbench.benchmark.fastlm <lm_eval arguments>``, which registers it and runs
lm-eval's CLI.
"""

from __future__ import annotations

import json
import logging
import sys

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

log = logging.getLogger("consistbench")

MODEL_NAME = "consistbench-hf"
# generation_config fields whose non-default value adds a logits processor to greedy decoding
_PROCESSOR_FIELDS = {
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "min_length": 0, "min_new_tokens": None,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "suppress_tokens": None,
    "begin_suppress_tokens": None, "sequence_bias": None, "exponential_decay_length_penalty": None,
    "renormalize_logits": False, "guidance_scale": None, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
}
_GREEDY_KWARGS = {"do_sample", "temperature", "until", "max_gen_toks"}


def _as_bool(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes")


@register_model(MODEL_NAME)
class ConsistbenchHFLM(HFLM):
    """lm-eval's HF model; greedy generation through the prefix-reuse, continuous-batching generator."""

    def __init__(self, *args, decode_slots: int | str = 32, prefix_min_saved: int | str = 32,
                 admit_min: int | str = 4, quantize: str | None = None, progress: bool | str = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.decode_slots = int(decode_slots)
        self.prefix_min_saved = int(prefix_min_saved)
        self.admit_min = int(admit_min)
        self.quantize = (quantize or "").lower() or None
        self.show_progress = _as_bool(progress)
        if self.quantize not in (None, "none", "int8"):
            raise ValueError(f"quantize={quantize!r}: only int8 is supported")
        if self.quantize == "int8":
            import torch

            # dynamic int8 matmuls for every nn.Linear (weights int8, activations quantised per call)
            self._model = torch.ao.quantization.quantize_dynamic(self._model, {torch.nn.Linear}, dtype=torch.qint8)
        self.last_stats = None
        self._fallback_reason: str | None = None

    # which requests this path can serve exactly ----------------------------------------------
    def _unsupported(self, kwargs: dict) -> str | None:
        if self.backend != "causal":
            return "not a decoder-only model"
        if self.think_end_token is not None:
            return "think_end_token is set"
        if kwargs.get("do_sample"):
            return "sampling (do_sample=True)"
        extra = sorted(set(kwargs) - _GREEDY_KWARGS)
        if extra:
            return f"generation settings {extra}"
        cfg = self.model.generation_config
        for name, default in _PROCESSOR_FIELDS.items():
            value = getattr(cfg, name, default)
            if value not in (default, None) and not (isinstance(value, (list, tuple)) and not value):
                return f"the model's generation_config sets {name}={value!r}"
        try:
            from consistbench.benchmark.fastgen import model_layout

            model_layout(self.model)
        except ValueError as exc:
            return str(exc)
        return None

    def _eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return [] if eos is None else ([int(eos)] if isinstance(eos, int) else [int(e) for e in eos])

    def _encode(self, context: str, max_ctx_len: int) -> list[int]:
        # exactly HFLM's tokenisation for one row of a batch (special tokens, left truncation)
        ids, _ = self.tok_batch_encode([context], left_truncate_len=max_ctx_len, truncation=self.truncation)
        return ids[0].tolist()

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from tqdm import tqdm

        from consistbench.benchmark.fastgen import PrefixGenerator

        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        results: list[str | None] = [None] * len(requests)
        pbar = tqdm(total=len(requests), disable=(disable_tqdm or self.rank != 0 or not self.show_progress),
                    desc="generating (consistbench-hf)", unit="row", dynamic_ncols=True)
        eos_text = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        for indices in groups.values():
            gen_kwargs = requests[indices[0]].args[1]
            kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
            max_gen_toks = int(kwargs["max_gen_toks"])
            reason = self._unsupported({k: v for k, v in kwargs.items() if not (k == "temperature" and not v)})
            if reason:
                log.warning("consistbench-hf: %s; these %d requests use lm-eval's HF generation instead",
                            reason, len(indices))
                self._fallback_reason = reason
                pbar.update(0)
                outs = super().generate_until([requests[i] for i in indices], disable_tqdm=disable_tqdm)
                for i, out in zip(indices, outs):
                    results[i] = out
                pbar.update(len(indices))
                continue
            max_ctx_len = self.max_length - max_gen_toks
            if max_ctx_len <= 0:
                raise ValueError(f"max_gen_toks ({max_gen_toks}) must be less than the model's maximum length "
                                 f"({self.max_length})")
            contexts = [requests[i].args[0] for i in indices]
            seqs = [self._encode(c, max_ctx_len) for c in contexts]

            def text_of(tokens: list[int]) -> str:
                return self.tok_decode(tokens)

            def stopped(row: int, tokens: list[int]) -> bool:
                text = text_of(tokens)
                return any(s and s in text for s in until)

            def done(row: int, tokens: list[int]) -> None:
                s = postprocess_generated_text(generation=text_of(tokens), stop=until, think_end_token=None)
                results[indices[row]] = s
                self.cache_hook.add_partial("generate_until", (contexts[row], gen_kwargs), s)
                pbar.update(1)

            generator = PrefixGenerator(self.model, slots=self.decode_slots, min_saved_tokens=self.prefix_min_saved,
                                        admit_min=self.admit_min)
            generator.generate(seqs, max_gen_toks, eos_ids=self._eos_ids(), is_finished=stopped, on_done=done,
                               pad_id=self.tokenizer.pad_token_id or 0)
            self.last_stats = generator.stats
            sync = getattr(self.cache_hook, "sync", None)
            if sync is not None:
                sync()
        pbar.close()
        return results  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> None:
    """lm-eval's command line with ``consistbench-hf`` registered (``python -m consistbench.benchmark.fastlm``)."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", *(sys.argv[1:] if argv is None else argv)]
    cli_evaluate()


if __name__ == "__main__":
    main()
