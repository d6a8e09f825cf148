"""SFT + triplet loss (Peng et al. 2025): a ``transformers.Trainer`` that overrides only the loss.

    L = L_CE + alpha * L_triplet
    L_triplet = mean over triplets of max(0, d(f(A), f(P)) - d(f(A), f(N)) + margin)

- ``L_CE`` is the causal-LM cross-entropy on the answer tokens (the collator sets the prompt's
  labels to -100), computed by ``transformers.Trainer.compute_loss`` itself, so with
  ``alpha = 0`` the loss *is* plain SFT: same function, same normalisation over the tokens of
  the accumulated batch, same gradient-accumulation and multi-device scaling.
- ``f(.)`` pools hidden states at ``config.pooling_layer`` with ``config.pooling`` over
  ``config.pooled_positions``: the query tokens inside the prompt (``query_mask`` from the
  collator; the default), every prompt token, or the question alone in a separate forward pass.
  In the first two cases the states come from the same forward pass that gives the logits
  (``output_hidden_states=True``): no second forward.
- A batch of B triplets is 3B sequences: anchors, then positives, then negatives.

Three ways to compute the same CE (to float rounding), chosen by the config: Trainer's (logits at
every position of the padded batch; the default), ``answer_logits_only`` (the decoder's last
hidden state at the positions whose next token is a label goes through the output embedding, and
only those rows get logits; transformers' ``logits_to_keep`` takes one index list for the whole
batch, while every row's answer starts at its own position, hence the few lines below), and
``padding_free`` / ``share_prefix`` (:mod:`consistbench.reference_method.packing`: no padding, a
shared prompt prefix computed once). Each of them calls the model through its DDP wrapper, so
gradients are synchronised under ``accelerate launch``, and scales the CE as Trainer does there.

The trainer keeps the per-step parts of the loss in ``loss_history`` (a list of dicts with
``ce``, ``triplet``, ``loss``; with the triplet term also ``active`` (share of triplets whose hinge
is positive), ``d_ap``, ``d_an`` (mean distances), and ``grad_ratio`` (alpha times the triplet
term's gradient norm over the CE's, on the trainable parameters) at step 0 and every
``logging_steps``), which ``consistbench.reference_method.train`` writes into the model's card and
every checkpoint (``loss_history.json``), so a resumed run keeps the whole history. The same
activity goes into Trainer's log history (``state.log_history``, saved as ``trainer_state.json``,
seen by every logging callback): an entry at step 0 and every logging step (``triplet_active``,
``grad_ratio``, ``d_ap``, ``d_an``, ``ce``, ``triplet``), and the mean ``ce``, ``triplet`` and
``triplet_active`` in each training log. Under several processes the recorded values are over the
whole (all-process) batch; ``grad_ratio`` is then the mean of each process's ratio.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback

from consistbench.reference_method.collator import IGNORE_INDEX
from consistbench.reference_method.packing import additive_mask, layout_of
from consistbench.reference_method.samplers import GroupedSampler

logger = logging.getLogger(__name__)

HISTORY_NAME = "loss_history.json"  # the loss history so far, in every checkpoint
QUESTION_KEYS = ("question_input_ids", "question_attention_mask", "question_query_mask")


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool ``hidden`` (N x L x H) over the positions where ``mask`` (N x L) is 1."""
    mask = mask.to(hidden.dtype)
    if mode == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)
    if mode == "last":
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = torch.where(mask > 0, positions, torch.full_like(positions, -1)).max(1).values.clamp_min(0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if mode == "max":
        return hidden.masked_fill(mask.unsqueeze(-1) == 0, torch.finfo(hidden.dtype).min).max(1).values
    raise ValueError(f"unknown pooling {mode!r}")


def distance(u: torch.Tensor, v: torch.Tensor, kind: str) -> torch.Tensor:
    """Row-wise distance: ``1 - cos(u, v)`` or the Euclidean norm of ``u - v``."""
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(u, v, dim=-1)
    if kind == "euclidean":
        return (u - v).norm(dim=-1)
    raise ValueError(f"unknown distance {kind!r}")


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, *, margin: float,
                 kind: str = "cosine") -> torch.Tensor:
    """Mean over rows of ``max(0, d(a, p) - d(a, n) + margin)``; exactly 0 when every margin is met."""
    return torch.relu(distance(anchor, positive, kind) - distance(anchor, negative, kind) + margin).mean()


@dataclass
class LossParts:
    """One micro-batch's loss and what is recorded about it."""

    loss: torch.Tensor
    outputs: object
    ce: float  # the CE as normalised for the step (before the multi-process scaling)
    triplet: torch.Tensor | None = None  # mean hinge
    d_ap: torch.Tensor | None = None  # per triplet
    d_an: torch.Tensor | None = None
    grad_ratio: float | None = None
    term_scale: float = 1.0  # what the triplet term is multiplied by in the loss (1 / accumulation steps, or 1)


class _SaveHistory(TrainerCallback):
    """Writes the loss history into each checkpoint, so a resumed run keeps the steps before it."""

    def __init__(self, trainer: ConsistencyTrainer):
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            tmp = folder / (HISTORY_NAME + ".tmp")
            tmp.write_text(json.dumps(self.trainer.loss_history), encoding="utf-8")
            tmp.replace(folder / HISTORY_NAME)


class ConsistencyTrainer(Trainer):
    """``Trainer`` with ``L = L_CE + alpha * L_triplet``; ``args`` is a :class:`ConsistencyConfig`."""

    loss_history: list[dict]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_history = []
        self.compute_stats = {"tokens": 0, "positions": 0}  # real tokens / positions computed, training steps
        self._answer_path = None
        self._tree_rule = None
        self._measured_step = -1
        self._log_cursor = 0  # loss_history entries already summarised in a training log
        self._warned = set()
        self.add_callback(_SaveHistory(self))

    # -- public ----------------------------------------------------------------------------------
    @property
    def answer_path_used(self) -> bool:
        """Whether answer-only logits were used (decided on the first batch)."""
        return bool(self._answer_path)

    def load_history(self, checkpoint: str | Path) -> None:
        """Continue the loss history saved in ``checkpoint`` (nothing when it has none: older runs)."""
        file = Path(checkpoint) / HISTORY_NAME
        if file.is_file():
            step = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
            self.loss_history = [h for h in json.loads(file.read_text(encoding="utf-8")) if h["step"] < step]
            self._log_cursor = len(self.loss_history)

    def measure(self, model, inputs) -> dict:
        """The triplet term's activity on one collated batch, without training: CE, triplet, share of
        active triplets, mean and per-triplet d(A,P) and d(A,N), and the gradient-norm ratio (what
        training records at step 0; the step-0 screen calls this)."""
        was_training = model.training
        model.train()
        try:
            parts = self._loss_parts(model, dict(inputs), None, measure=True)
        finally:
            model.train(was_training)
        record = self._record(parts)
        record.update(d_ap_each=parts.d_ap.tolist(), d_an_each=parts.d_an.tolist())
        return record

    # -- Trainer hooks ---------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        args = self.args
        by = "passage" if getattr(args, "group_by_passage", False) else (
            "length" if args.train_sampling_strategy == "group_by_length" else None)
        if by is None or dataset is None or not hasattr(dataset, "__len__"):
            return super()._get_train_sampler(train_dataset)
        seed = args.data_seed if args.data_seed is not None else args.seed
        return GroupedSampler(dataset, by=by, batch_size=args.train_batch_size * args.gradient_accumulation_steps,
                              seed=seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        activity = self._activity_step(model)
        measure = activity and getattr(self.args, "log_grad_ratio", False) and torch.is_grad_enabled()
        parts = self._loss_parts(model, dict(inputs), num_items_in_batch, measure=measure)
        if activity:
            self._measured_step = self.state.global_step
        if model.training:
            record = self._record(parts)
            self.loss_history.append(record)
            if activity and record["triplet"] is not None:
                # an entry of its own in the log history at step 0 and every logging step (trainer_state.json)
                entry = {"triplet_active": record["active"], "grad_ratio": record["grad_ratio"], "d_ap": record["d_ap"],
                         "d_an": record["d_an"], "ce": record["ce"], "triplet": record["triplet"]}
                self.log({k: v for k, v in entry.items() if v is not None})  # no grad_ratio with log_grad_ratio off
        return (parts.loss, parts.outputs) if return_outputs else parts.loss

    def log(self, logs: dict, start_time=None) -> None:
        """Trainer's log, with a training log (``loss``) also carrying the mean ``ce``, ``triplet`` and
        ``triplet_active`` of the micro-batches since the previous one."""
        recent = self.loss_history[self._log_cursor:]
        if "loss" in logs and recent:
            logs = dict(logs, ce=sum(h["ce"] for h in recent) / len(recent))
            with_triplet = [h for h in recent if h.get("triplet") is not None]
            if with_triplet:
                logs["triplet"] = sum(h["triplet"] for h in with_triplet) / len(with_triplet)
                logs["triplet_active"] = sum(h["active"] for h in with_triplet) / len(with_triplet)
            self._log_cursor = len(self.loss_history)
        super().log(logs, start_time)

    # -- the loss ----------------------------------------------------------------------------------
    def _loss_parts(self, model, inputs: dict, num_items_in_batch, *, measure: bool) -> LossParts:
        args = self.args
        query_mask = inputs.pop("query_mask", None)
        question = {k: inputs.pop(k) for k in QUESTION_KEYS if k in inputs}
        use_triplet = args.alpha > 0
        positions = getattr(args, "pooled_positions", "question")
        if use_triplet:
            if query_mask is None:
                raise ValueError("alpha > 0 needs triplet batches (query_mask missing)")
            if query_mask.shape[0] % 3:
                raise ValueError(f"a triplet batch has 3B sequences, got {query_mask.shape[0]}")
            if positions == "question_only" and not question:
                raise ValueError("pooled_positions='question_only' needs rows encoded with question_only "
                                 "(prepare_data(..., question_only=True))")
        in_batch = use_triplet and positions != "question_only"
        pool_mask = None
        if in_batch:
            pool_mask = query_mask if positions == "question" else \
                ((inputs["attention_mask"] > 0) & (inputs["labels"] == IGNORE_INDEX)).float()
        if model.training and "labels" in inputs:
            self.compute_stats["tokens"] += int(inputs["attention_mask"].sum())
        route = self._route(model, inputs)
        if route == "standard":
            if in_batch:
                inputs["output_hidden_states"] = True
            ce, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                               num_items_in_batch=num_items_in_batch)
            scale = self._ce_scale(num_items_in_batch)
            ce_value = ce.item() / scale
            states = outputs.hidden_states[args.pooling_layer] if in_batch else None
            if model.training:
                self.compute_stats["positions"] += inputs["input_ids"].numel()
        else:
            layout = None
            if route == "layout":
                layout = layout_of(dict(inputs, query_mask=query_mask), share_prefix=args.share_prefix,
                                   padding_free=args.padding_free, **self._trees(model))
            items = num_items_in_batch if self.model_accepts_loss_kwargs else None
            ce, states, outputs, computed = self._own_ce(model, inputs, layout, in_batch, items)
            ce_value = ce.item()
            scale = self._ce_scale(num_items_in_batch)
            if scale != 1:
                ce = ce * scale
            if model.training:
                self.compute_stats["positions"] += computed
            if layout is not None and states is not None:
                cols = int(pool_mask.nonzero()[:, 1].max()) + 1 if pool_mask.any() else 1
                pool_mask = pool_mask[:, :cols]
                states = states[layout.index[:, :cols].to(states.device)]
        if not use_triplet:
            return LossParts(ce, outputs, ce_value)
        if positions == "question_only":
            out = self.accelerator.unwrap_model(model)(
                input_ids=question["question_input_ids"], attention_mask=question["question_attention_mask"],
                use_cache=False, output_hidden_states=True, logits_to_keep=1)
            states, pool_mask = out.hidden_states[args.pooling_layer], question["question_query_mask"]
        pooled = pool(states, pool_mask.to(states.device), args.pooling).float()
        a, p, n = pooled.chunk(3)
        d_ap, d_an = distance(a, p, args.distance), distance(a, n, args.distance)
        triplet = torch.relu(d_ap - d_an + args.margin).mean()
        # Trainer divides a loss by the accumulation steps unless it is already normalised over
        # the accumulated batch (the CE is, via num_items_in_batch); the triplet term is a
        # per-micro-batch mean, so scale it the way Trainer would scale an unnormalised loss.
        scaled = self.loss_is_scaled_for_ga if self.loss_is_scaled_for_ga is not None else (
            (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None)
        steps = getattr(self, "current_gradient_accumulation_steps", 1)
        term = triplet / steps if scaled and model.training else triplet
        loss = ce + args.alpha * term
        ratio = self._grad_ratio(model, ce, args.alpha * term) if measure else None
        return LossParts(loss, outputs, ce_value, triplet.detach(), d_ap.detach(), d_an.detach(), ratio,
                         1.0 / steps if scaled and model.training else 1.0)

    def _record(self, parts: LossParts) -> dict:
        """One ``loss_history`` entry; over all processes when there are several."""
        step, several = self.state.global_step, self.accelerator.num_processes > 1
        if parts.triplet is None:
            ce = self._reduce([parts.ce], sums=(0,))[0] if several else parts.ce
            return {"step": step, "ce": ce, "triplet": None, "loss": ce if several else parts.loss.item()}
        values = [parts.ce, parts.triplet.item(), (parts.d_ap - parts.d_an + self.args.margin > 0).float().mean().item(),
                  parts.d_ap.mean().item(), parts.d_an.mean().item()]
        if several:
            values = self._reduce(values, sums=(0,))
        ce, triplet, active, d_ap, d_an = values
        loss = ce + self.args.alpha * triplet * parts.term_scale if several else parts.loss.item()
        return {"step": step, "ce": ce, "triplet": triplet, "loss": loss, "active": active, "d_ap": d_ap,
                "d_an": d_an, "grad_ratio": parts.grad_ratio}

    def _reduce(self, values: list[float], sums: tuple[int, ...]) -> list[float]:
        """Sum (the CE: each process's share of the all-process normalisation) or average over processes."""
        t = torch.tensor(values, dtype=torch.float64, device=self.args.device)
        t = self.accelerator.reduce(t, reduction="sum")
        n = self.accelerator.num_processes
        return [float(v) if i in sums else float(v) / n for i, v in enumerate(t.tolist())]

    def _ce_scale(self, num_items_in_batch) -> int:
        """Trainer's multi-process factor on a CE normalised over the all-process token count (DDP
        averages gradients, so each process's share of the sum is scaled back up)."""
        if (self.args.average_tokens_across_devices and (self.model_accepts_loss_kwargs or self.compute_loss_func)
                and num_items_in_batch is not None):
            scale = self.accelerator.num_processes // self.get_tp_size()
            return scale if self.args.n_gpu <= 1 else self.args.n_gpu
        return 1

    def _activity_step(self, model) -> bool:
        """Whether this micro-batch is the first of step 0 or of a logging step (activity is logged)."""
        args, step = self.args, self.state.global_step
        if not (model.training and args.alpha > 0) or step == self._measured_step:
            return False
        every = max(1, int(self.state.logging_steps or 1))
        return step % every == 0

    def _grad_ratio(self, model, ce: torch.Tensor, triplet: torch.Tensor) -> float | None:
        """||grad(alpha * triplet)|| / ||grad(CE)|| over the trainable parameters: two extra backward passes."""
        params = [p for p in model.parameters() if p.requires_grad]
        if not params or not ce.requires_grad or not triplet.requires_grad:
            return None
        norms = []
        for term in (ce, triplet):
            grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            norms.append(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)).item())
        return norms[1] / norms[0] if norms[0] > 0 else None

    # -- routes -------------------------------------------------------------------------------------
    def _warn_once(self, key: str, message: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)

    def _route(self, model, inputs) -> str:
        """"standard" (Trainer's CE), "answer" (answer-only logits on the padded batch) or "layout"
        (padding_free / share_prefix)."""
        args = self.args
        layout = getattr(args, "padding_free", False) or getattr(args, "share_prefix", False)
        if "labels" not in inputs or not (layout or args.answer_logits_only):
            return "standard"
        if self.label_smoother is not None or self.compute_loss_func is not None:
            self._warn_once("custom", "label smoothing or a custom loss function: using the standard loss path")
            return "standard"
        if layout:
            return "layout"
        return "answer" if model.training and self._answer_path_usable(model, inputs) else "standard"

    def _causal_lm(self, model):
        """The ``*ForCausalLM`` module under the accelerator's and peft's wrappers."""
        model = self.accelerator.unwrap_model(model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _trees(self, model) -> dict:
        """Whether shared-prefix trees (4-D masks) can be used, and up to which sequence length."""
        if self._tree_rule is None:
            config = self._causal_lm(model).config
            text = config.get_text_config() if hasattr(config, "get_text_config") else config
            impl = getattr(config, "_attn_implementation", None) or getattr(text, "_attn_implementation", None)
            limit = None
            window = getattr(text, "sliding_window", None)
            types = getattr(text, "layer_types", None)
            if window and (("sliding_attention" in types) if types else getattr(text, "use_sliding_window", True)):
                limit = int(window)
            chunk = getattr(text, "attention_chunk_size", None)
            if chunk:
                limit = min(limit or chunk, int(chunk))
            trees = impl in ("eager", "sdpa")
            if getattr(self.args, "share_prefix", False) and not trees:
                self._warn_once("trees", "share_prefix: %s attention takes no 4-D mask; sequences are computed "
                                "unshared", impl)
            self._tree_rule = {"trees": trees, "max_tree_length": limit, "mask": "bool" if impl == "sdpa" else "float"}
        return {k: self._tree_rule[k] for k in ("trees", "max_tree_length")}

    def _answer_path_usable(self, model, inputs) -> bool:
        """Decided once, on the first batch: can the logits be computed from the decoder's last hidden
        state by the output embedding alone? (Not so for logit soft-capping or scaling.)"""
        usable = getattr(self, "_answer_path", None)
        if usable is not None:
            return usable
        causal = self._causal_lm(model)
        runner = self.accelerator.unwrap_model(model)
        config = causal.config.get_text_config() if hasattr(causal.config, "get_text_config") else causal.config
        head = causal.get_output_embeddings()
        why = None
        if self.label_smoother is not None or self.compute_loss_func is not None:
            why = "label smoothing or a custom loss function"
        elif head is None:
            why = f"{type(causal).__name__} exposes no output embedding"
        elif getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None) not in (None, 1, 1.0):
            why = f"{type(causal).__name__} soft-caps or scales its logits (final_logit_softcapping, logit_scale)"
        else:
            ids, mask = inputs["input_ids"][:1, :32], inputs["attention_mask"][:1, :32]
            was_training = runner.training
            runner.eval()
            try:
                with torch.no_grad():
                    want = runner(input_ids=ids, attention_mask=mask).logits[0].float()
                    out = runner(input_ids=ids, attention_mask=mask, output_hidden_states=True, logits_to_keep=1)
                    with self.accelerator.autocast():  # as the head runs in the (prepared) model's forward
                        got = head(out.hidden_states[-1][0]).float()
            except (TypeError, ValueError) as exc:
                why = f"{type(causal).__name__} does not take logits_to_keep ({exc})"
            finally:
                runner.train(was_training)
            # in bf16 (weights or autocast) a product of another shape rounds differently: allow bf16's precision
            low = head.weight.dtype != torch.float32 or self.accelerator.mixed_precision in ("bf16", "fp16")
            tol = 2e-2 if low else 1e-4
            if why is None and (want.shape != got.shape or not torch.allclose(
                    want, got, rtol=tol, atol=tol * max(1.0, want.abs().max().item()))):
                why = f"{type(causal).__name__}'s logits are not its output embedding of the last hidden state"
        if why is not None:
            logger.warning("answer_logits_only: %s; using the standard loss path (logits at every position)", why)
        self._answer_path = why is None
        return self._answer_path

    def _own_ce(self, model, inputs: dict, layout, want_states: bool, items):
        """The causal-LM cross-entropy as ``transformers``' ``ForCausalLMLoss`` computes it (a sum over
        the label tokens divided by ``items`` when Trainer passes their count, else their mean), from
        the padded batch with answer-only logits (``layout`` None) or from a packing layout. Returns
        (CE, hidden states at ``pooling_layer`` laid out like the padded batch or flattened for
        ``layout.index``, the outputs, the positions computed)."""
        args = self.args
        causal = self._causal_lm(model)
        answer_only = args.answer_logits_only and self._answer_path_usable(model, inputs)
        head = causal.get_output_embeddings()
        if layout is None:
            inputs = dict(inputs)
            labels = inputs.pop("labels")
            out = model(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
            target = labels[:, 1:]
            keep = target != IGNORE_INDEX
            with self.accelerator.autocast():  # as the LM head runs inside the model's forward
                logits = head(out.hidden_states[-1][:, :-1][keep]).float()
            ce = F.cross_entropy(logits, target[keep], reduction="sum" if items is not None else "mean")
            states = out.hidden_states[args.pooling_layer] if want_states else None
            return self._normalise(ce, items), states, _outputs(out), inputs["input_ids"].numel()
        runner = self.accelerator.unwrap_model(model)
        device = inputs["input_ids"].device
        mask_kind = self._tree_rule["mask"] if self._tree_rule else "bool"
        rows, targets, weights, flats = [], [], [], []
        for k, call in enumerate(layout.calls):
            kwargs = {"input_ids": call.input_ids.to(device), "position_ids": call.position_ids.to(device),
                      "use_cache": False, "output_hidden_states": want_states or answer_only}
            if call.attention_mask is not None:
                m = call.attention_mask
                if m.dim() == 4 and mask_kind != "bool":
                    m = additive_mask(m, causal.dtype)
                kwargs["attention_mask"] = m.to(device)
            if answer_only:
                kwargs["logits_to_keep"] = 1
            out = (model if k == 0 else runner)(**kwargs)  # the first call through DDP's wrapper
            sel = (call.targets != IGNORE_INDEX).to(device)
            rows.append((out.hidden_states[-1] if answer_only else out.logits)[sel])
            targets.append(call.targets.to(device)[sel])
            if call.weights is not None:
                weights.append(call.weights.to(device)[sel])
            if want_states:
                hidden = out.hidden_states[args.pooling_layer]
                flats.append(hidden.reshape(-1, hidden.shape[-1]))
        rows = torch.cat(rows)
        if answer_only:
            with self.accelerator.autocast():  # as the LM head runs inside the model's forward
                rows = head(rows)
        logits = rows.float()
        target = torch.cat(targets)
        if weights:
            w = torch.cat(weights)
            ce = (F.cross_entropy(logits, target, reduction="none") * w).sum()
            if items is None:
                ce = ce / w.sum()
        else:
            ce = F.cross_entropy(logits, target, reduction="sum" if items is not None else "mean")
        states = torch.cat(flats) if want_states else None
        return self._normalise(ce, items), states, None, layout.positions

    @staticmethod
    def _normalise(ce: torch.Tensor, items) -> torch.Tensor:
        if items is None:
            return ce
        return ce / (items.to(ce.device) if torch.is_tensor(items) else items)


def _outputs(out):
    """The model output Trainer's prediction step expects (no logits: none were computed everywhere)."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return CausalLMOutputWithPast(logits=None, hidden_states=out.hidden_states)
