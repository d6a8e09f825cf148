"""Greedy generation for many prompts at once on a transformers causal LM, with shared-prefix KV
reuse and continuous batching. Hand-written because no installed library does both on CPU:
transformers' ``generate`` pads a static batch and recomputes every prompt from its first token,
its continuous-batching manager needs a paged-attention GPU setup, and the CPU engines
(ctranslate2, llama.cpp) either cache one static prompt per batch or are not installed here.

How it works (nothing in it knows the benchmark's prompt format):

1. **Prefix tree.** The prompts' token sequences are sorted; a node is a set of consecutive
   sequences and its depth their longest common prefix (in sorted order the LCP of the first
   and last sequence is the LCP of them all). A node is kept when it saves at least
   ``min_saved_tokens`` of prefill, ``(rows under it - 1) * (its depth - the kept parent's
   depth)``; smaller splits are folded into their parent. A kept node's key/value states are
   computed once, on top of its parent's, and shared by every row below it.
2. **Slots.** The decode batch is a fixed set of slots, each a row of a preallocated key/value
   buffer (:class:`SlotCache`, a ``transformers.Cache``). A row is admitted into a free slot by
   copying its node's key/values into it and prefilling only its own suffix; it retires as soon
   as it emits an end-of-sequence token, its decoded text contains a stop string, or it reaches
   ``max_new_tokens``, and the next row takes its slot. Every token in the buffer carries its
   position, so rows of different lengths share one batch: each step writes one token per slot
   at that slot's own position and the attention mask (causal, plus the sliding window where a
   layer has one) is built from those positions.
3. **Exactness.** Greedy argmax on the same weights and positions: the only differences from
   ``model.generate`` on the whole prompt are float rounding from other matrix shapes (the same
   kind of difference that changing the batch size makes in ``generate``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

try:
    from transformers.cache_utils import Cache as _CacheBase
except ImportError:  # pragma: no cover - transformers always has it
    _CacheBase = object

SUPPORTED_LAYER_TYPES = {"full_attention", "sliding_attention"}


# ---------------------------------------------------------------------------------------------
# prefix tree

@dataclass
class PrefixNode:
    depth: int                      # tokens of the shared prefix
    parent: PrefixNode | None
    tokens: tuple[int, ...]         # the prefix itself (length == depth)
    rows: list[int] = field(default_factory=list)   # rows whose prompt is admitted on top of this node
    children: list[PrefixNode] = field(default_factory=list)
    pending: int = 0                # rows and child nodes still to use this node's key/values
    kv: list | None = None          # per layer (K, V), each [kv_heads, depth, head_dim], once computed


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def build_prefix_tree(seqs: Sequence[Sequence[int]], min_saved_tokens: int = 32) -> tuple[PrefixNode, list[int]]:
    """Return (root, order): the kept-node tree over ``seqs`` and the rows in sorted (DFS) order.

    The root (depth 0) always exists; every row is attached to exactly one node, the deepest
    kept node whose prefix is shorter than the row (a row keeps at least one token of its own,
    whose logits give its first generated token).
    """
    order = sorted(range(len(seqs)), key=lambda i: tuple(seqs[i]))
    root = PrefixNode(depth=0, parent=None, tokens=())

    def attach(node: PrefixNode, row: int) -> None:
        while node.depth >= len(seqs[row]):  # the row must keep one token of its own
            node = node.parent
        node.rows.append(row)

    def build(lo: int, hi: int, kept: PrefixNode) -> None:
        first, last = seqs[order[lo]], seqs[order[hi - 1]]
        depth = _lcp(first, last) if hi - lo > 1 else len(first)
        node = kept
        if hi - lo > 1 and depth > kept.depth and (hi - lo - 1) * (depth - kept.depth) >= min_saved_tokens:
            node = PrefixNode(depth=depth, parent=kept, tokens=tuple(first[:depth]))
            kept.children.append(node)
        if hi - lo == 1:
            attach(node, order[lo])
            return
        i = lo
        while i < hi:
            s = seqs[order[i]]
            if len(s) == depth:  # a row that ends exactly at this depth
                attach(node, order[i])
                i += 1
                continue
            tok = s[depth]
            j = i + 1
            while j < hi and len(seqs[order[j]]) > depth and seqs[order[j]][depth] == tok:
                j += 1
            build(i, j, node)
            i = j

    if seqs:
        build(0, len(seqs), root)
    return root, order


def assign_nodes(root: PrefixNode, n_rows: int) -> list[PrefixNode]:
    """Row index -> the node it is admitted on; sets every node's ``pending`` count."""
    out: list[PrefixNode | None] = [None] * n_rows
    stack = [root]
    while stack:
        node = stack.pop()
        node.pending = len(node.rows) + len(node.children)
        for r in node.rows:
            out[r] = node
        stack.extend(node.children)
    return out  # type: ignore[return-value]


def prefill_tokens(seqs: Sequence[Sequence[int]], root: PrefixNode, nodes: Sequence[PrefixNode]) -> int:
    """Prompt tokens this plan computes (each kept node's own span once, plus every row's suffix)."""
    total = sum(len(s) - nodes[i].depth for i, s in enumerate(seqs))
    stack = list(root.children)
    while stack:
        node = stack.pop()
        total += node.depth - node.parent.depth
        stack.extend(node.children)
    return total


# ---------------------------------------------------------------------------------------------
# the key/value buffer

class SlotCache(_CacheBase):
    """A ``transformers.Cache`` over a preallocated buffer of ``slots`` rows.

    Before each forward the caller sets ``sel`` (which slots the batch rows are; None: all),
    ``widx`` (``[batch, q]`` buffer columns the new tokens go to) and ``width`` (columns the
    attention reads). ``update`` writes the new keys/values there and returns the buffer's
    ``[:, :, :width]`` view for those slots. Token positions live in ``kpos`` (-1: empty).
    """

    def __init__(self, n_layers: int, slots: int, capacity: int, dtype: torch.dtype):
        if _CacheBase is not object:
            super().__init__(layers=[])
        self.n_layers, self.slots, self.capacity, self.dtype = n_layers, slots, capacity, dtype
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers
        self.kpos = torch.full((slots, capacity), -1, dtype=torch.long)
        self.sel: torch.Tensor | None = None
        self._all = torch.arange(slots)
        self.widx: torch.Tensor | None = None
        self.width = 0

    # transformers asks a cache these; answers that are right for a cache read through our masks
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.width

    def __len__(self) -> int:
        return self.n_layers

    @property
    def is_compileable(self) -> bool:
        return False

    def grow(self, capacity: int) -> None:
        if capacity <= self.capacity:
            return
        extra = capacity - self.capacity
        self.kpos = torch.cat([self.kpos, torch.full((self.slots, extra), -1, dtype=torch.long)], dim=1)
        for store in (self.k, self.v):
            for i, t in enumerate(store):
                if t is not None:
                    pad = t.new_zeros(t.shape[0], t.shape[1], extra, t.shape[3])
                    store[i] = torch.cat([t, pad], dim=2)
        self.capacity = capacity

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        k_buf, v_buf = self.k[layer_idx], self.v[layer_idx]
        if k_buf is None:
            shape = (self.slots, key_states.shape[1], self.capacity, key_states.shape[3])
            k_buf = self.k[layer_idx] = key_states.new_zeros(shape)
            v_buf = self.v[layer_idx] = value_states.new_zeros(shape[:3] + (value_states.shape[3],))
        rows = (self._all if self.sel is None else self.sel)[:, None]
        # advanced indices around a slice put the indexed dims first: [batch, q, heads, dim]
        k_buf[rows, :, self.widx] = key_states.transpose(1, 2).to(k_buf.dtype)
        v_buf[rows, :, self.widx] = value_states.transpose(1, 2).to(v_buf.dtype)
        if self.sel is None:
            return k_buf[:, :, : self.width], v_buf[:, :, : self.width]
        return k_buf[self.sel, :, : self.width], v_buf[self.sel, :, : self.width]

    def load(self, slot: int, kv: list, length: int) -> None:
        """Copy the first ``length`` tokens of a node's key/values into ``slot`` (positions 0..length-1)."""
        self.kpos[slot].fill_(-1)
        if length:
            self.kpos[slot, :length] = torch.arange(length)
        for layer, (k, v) in enumerate(kv or []):
            if length == 0:
                break
            if self.k[layer] is None:
                shape = (self.slots, k.shape[0], self.capacity, k.shape[2])
                self.k[layer] = k.new_zeros(shape)
                self.v[layer] = v.new_zeros(shape[:3] + (v.shape[2],))
            self.k[layer][slot, :, :length] = k[:, :length]
            self.v[layer][slot, :, :length] = v[:, :length]

    def compact(self, keep: list[int]) -> SlotCache:
        """A cache holding only the slots ``keep`` (in that order), same capacity."""
        idx = torch.tensor(keep, dtype=torch.long)
        new = SlotCache(self.n_layers, len(keep), self.capacity, self.dtype)
        new.kpos = self.kpos[idx].clone()
        new.k = [None if t is None else t[idx].clone() for t in self.k]
        new.v = [None if t is None else t[idx].clone() for t in self.v]
        new.width = self.width
        return new

    def export(self, slot: int, length: int) -> list:
        return [(self.k[i][slot, :, :length].clone(), self.v[i][slot, :, :length].clone()) for i in range(self.n_layers)]


# ---------------------------------------------------------------------------------------------
# the generator

@dataclass
class GenStats:
    rows: int = 0
    prompt_tokens: int = 0
    prefill_tokens: int = 0     # prompt tokens actually computed (after prefix reuse)
    generated_tokens: int = 0
    decode_steps: int = 0
    forwards: int = 0
    compactions: int = 0        # times the decode batch shrank to its active rows (end of the queue)
    seconds: float = 0.0


def model_layout(model) -> tuple[list[str], int | None]:
    """The attention kind of each layer and the sliding window; raises ValueError for other kinds."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n = cfg.num_hidden_layers
    window = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None)
    if types is None:
        use_sw = getattr(cfg, "use_sliding_window", True)
        types = ["sliding_attention" if window and use_sw else "full_attention"] * n
    types = list(types)[:n]
    unknown = sorted(set(types) - SUPPORTED_LAYER_TYPES)
    if unknown:
        raise ValueError(f"layer types {unknown} are not supported by the prefix-reuse generator")
    if getattr(cfg, "is_encoder_decoder", False):
        raise ValueError("encoder-decoder models are not supported by the prefix-reuse generator")
    return types, (window if "sliding_attention" in types else None)


class PrefixGenerator:
    """Greedy generation with prefix reuse and continuous batching (see the module docstring)."""

    def __init__(self, model, *, slots: int = 32, min_saved_tokens: int = 32, admit_min: int = 4,
                 kv_dtype: torch.dtype | None = None):
        self.model = model
        self.layer_types, self.window = model_layout(model)
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.n_layers = cfg.num_hidden_layers
        # Gemma 3 (and any model with `layer_types`) reads a dict of masks; a single-kind model one tensor
        self.mask_dict = getattr(cfg, "layer_types", None) is not None
        self.slots = int(slots)
        self.min_saved_tokens = int(min_saved_tokens)
        self.admit_min = max(1, int(admit_min))
        self.kv_dtype = kv_dtype or next(model.parameters()).dtype
        self.stats = GenStats()

    # masks --------------------------------------------------------------------------------
    def _masks(self, kpos: torch.Tensor, qpos: torch.Tensor, widx: torch.Tensor):
        """Boolean [b, 1, q, width] masks (True: attend) from key and query positions.

        A query also always sees its own key: padding queries then have one finite score and
        never produce NaN (their outputs are never used)."""
        k = kpos[:, None, :]
        q = qpos[:, :, None]
        own = torch.zeros(kpos.shape[0], qpos.shape[1], kpos.shape[1], dtype=torch.bool)
        own.scatter_(2, widx[:, :, None], True)
        full = ((k >= 0) & (k <= q)) | own
        if not self.mask_dict and self.window is None:
            return full[:, None]
        sliding = (full & (k > q - self.window)) | own if self.window else full
        if not self.mask_dict:
            return sliding[:, None]
        return {"full_attention": full[:, None], "sliding_attention": sliding[:, None]}

    def _forward(self, cache: SlotCache, ids: torch.Tensor, qpos: torch.Tensor, widx: torch.Tensor,
                 sel: torch.Tensor | None):
        rows = torch.arange(cache.slots) if sel is None else sel
        cache.kpos[rows[:, None], widx] = torch.where(qpos >= 0, qpos, torch.full_like(qpos, -1))
        cache.sel, cache.widx = sel, widx
        cache.width = int(widx.max()) + 1 if sel is not None else cache.width
        kpos = cache.kpos[rows, : cache.width]
        mask = self._masks(kpos, qpos.clamp(min=0), widx)
        out = self.model(input_ids=ids, position_ids=qpos.clamp(min=0), attention_mask=mask,
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        self.stats.forwards += 1
        return out.logits[:, -1, :]

    def _compute_node(self, node: PrefixNode) -> None:
        parent = node.parent
        span = node.tokens[parent.depth:]
        cache = SlotCache(self.n_layers, 1, node.depth, self.kv_dtype)
        cache.load(0, parent.kv, parent.depth)
        ids = torch.tensor([span], dtype=torch.long)
        qpos = torch.arange(parent.depth, node.depth)[None]
        self._forward(cache, ids, qpos, qpos.clone(), torch.tensor([0]))
        node.kv = cache.export(0, node.depth)
        self.stats.prefill_tokens += len(span)

    def _release(self, node: PrefixNode | None) -> None:
        while node is not None:
            node.pending -= 1
            if node.pending > 0:
                return
            node.kv = None
            node = node.parent

    # main loop ----------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, seqs: Sequence[Sequence[int]], max_new_tokens: int, *, eos_ids: Sequence[int] = (),
                 is_finished: Callable[[int, list[int]], bool] | None = None,
                 on_done: Callable[[int, list[int]], None] | None = None, pad_id: int = 0) -> list[list[int]]:
        """Greedy continuations (token ids, without the end-of-sequence token) for every sequence.

        ``is_finished(row, tokens)`` is asked after each new token (stop strings); ``on_done``
        is called as soon as a row retires. ``max_new_tokens`` caps every row.
        """
        t0 = time.perf_counter()
        n = len(seqs)
        results: list[list[int] | None] = [None] * n
        if n == 0:
            return []
        if any(len(s) == 0 for s in seqs):
            raise ValueError("an empty prompt has no token to continue from")
        eos = set(int(e) for e in eos_ids)
        root, order = build_prefix_tree(seqs, self.min_saved_tokens)
        nodes = assign_nodes(root, n)
        root.pending += 1  # held until the end
        self.stats.rows += n
        self.stats.prompt_tokens += sum(len(s) for s in seqs)
        S = min(self.slots, n)
        capacity = max(len(s) for s in seqs) + max_new_tokens + 64
        cache = SlotCache(self.n_layers, S, capacity, self.kv_dtype)
        queue = list(order)
        qi = 0
        free = list(range(S))
        slot_row: list[int | None] = [None] * S
        slot_next = [0] * S        # next buffer column
        slot_pos = [0] * S         # position of the next token
        slot_last = [pad_id] * S   # the token to feed next
        gen: dict[int, list[int]] = {}

        def finish(slot: int) -> None:
            row = slot_row[slot]
            results[row] = gen.pop(row)
            slot_row[slot] = None
            cache.kpos[slot].fill_(-1)
            slot_next[slot] = 0
            slot_pos[slot] = 0
            slot_last[slot] = pad_id
            free.append(slot)
            if on_done is not None:
                on_done(row, results[row])

        def accept(slot: int, token: int) -> None:
            row = slot_row[slot]
            toks = gen[row]
            if token in eos:
                finish(slot)
                return
            toks.append(token)
            self.stats.generated_tokens += 1
            slot_last[slot] = token
            if len(toks) >= max_new_tokens or (is_finished is not None and is_finished(row, toks)):
                finish(slot)

        if max_new_tokens <= 0:
            for row in range(n):
                results[row] = []
                if on_done is not None:
                    on_done(row, [])
            return results  # type: ignore[return-value]

        while qi < len(queue) or len(free) < S:
            active = S - len(free)
            if qi < len(queue) and free and (len(free) >= min(self.admit_min, len(queue) - qi) or active == 0):
                batch = []
                while free and qi < len(queue):
                    batch.append((free.pop(0), queue[qi]))
                    qi += 1
                self._admit(cache, batch, seqs, nodes, slot_row, slot_next, slot_pos, gen, accept)
                continue
            if qi == len(queue) and 0 < active <= S // 2:
                # nothing left to admit: drop the empty slots so that decode steps stop computing them
                keep = [s for s in range(S) if slot_row[s] is not None]
                cache = cache.compact(keep)
                for arr in (slot_row, slot_next, slot_pos, slot_last):
                    arr[:] = [arr[s] for s in keep]
                S = len(keep)
                free.clear()
                self.stats.compactions += 1
            # one decode step over every slot
            widx = torch.tensor(slot_next, dtype=torch.long)[:, None]
            need = int(widx.max()) + 1
            if need > cache.capacity:
                cache.grow(max(need, cache.capacity + 256))
            cache.width = need
            qpos = torch.tensor([p if r is not None else -1 for p, r in zip(slot_pos, slot_row)], dtype=torch.long)[:, None]
            ids = torch.tensor(slot_last, dtype=torch.long)[:, None]
            logits = self._forward(cache, ids, qpos, widx, None)
            self.stats.decode_steps += 1
            nxt = logits.argmax(dim=-1).tolist()
            for slot in range(S):
                if slot_row[slot] is None:
                    continue
                slot_next[slot] += 1
                slot_pos[slot] += 1
                accept(slot, nxt[slot])
        self._release(root)
        self.stats.seconds += time.perf_counter() - t0
        return results  # type: ignore[return-value]

    def _admit(self, cache, batch, seqs, nodes, slot_row, slot_next, slot_pos, gen, accept) -> None:
        """Copy each admitted row's prefix into its slot and prefill all their suffixes in one forward."""
        starts = []
        for slot, row in batch:
            node = nodes[row]
            chain = []
            walk = node
            while walk is not None and walk.depth > 0 and walk.kv is None:
                chain.append(walk)
                walk = walk.parent
            for todo in reversed(chain):
                self._compute_node(todo)
            start = node.depth
            cache.load(slot, node.kv, start)
            self._release(node)
            starts.append(start)
        suffixes = [seqs[row][start:] for (slot, row), start in zip(batch, starts)]
        q = max(len(s) for s in suffixes)
        need = max(st + q for st in starts) + 1
        if need > cache.capacity:
            cache.grow(need + 256)
        ids, qpos, widx = [], [], []
        for (slot, row), start, suf in zip(batch, starts, suffixes):
            pad = q - len(suf)  # left padding: every row's last prompt token is the batch's last column
            ids.append([0] * pad + list(suf))
            qpos.append([-1] * pad + list(range(start, start + len(suf))))
            widx.append(list(range(start, start + q)))
            self.stats.prefill_tokens += len(suf)
        sel = torch.tensor([slot for slot, _ in batch], dtype=torch.long)
        logits = self._forward(cache, torch.tensor(ids, dtype=torch.long), torch.tensor(qpos, dtype=torch.long),
                               torch.tensor(widx, dtype=torch.long), sel)
        nxt = logits.argmax(dim=-1).tolist()
        for (slot, row), start, suf, token in zip(batch, starts, suffixes, nxt):
            slot_row[slot] = row
            slot_next[slot] = start + q
            slot_pos[slot] = start + len(suf)
            gen[row] = []
            accept(slot, token)
