"""Crash-safe generation cache: one append-only JSON Lines file per model identity.

Every generation is appended as ``{"key": ..., "response": ...}`` the moment the model returns
it (through lm-eval's ``cache_hook``, which every lm-eval model calls per finished request), and
flushed at once, so a process killed with ``kill -9`` loses at most the answers still being
decoded; ``fsync`` runs at most once a second and at the end of every ``generate_until`` call,
so an operating-system crash loses at most the last second. Started again with the same
command, ``consistbench eval`` answers every cached request from the file and generates only
the rest.

- Key: sha256 of the model identity (:func:`model_identity`: model type, model arguments,
  backend and a fingerprint of the weights folder), the prompt and the generation settings.
- A torn last line (the process died while writing it) is ignored and cut off before appending;
  any other unreadable line stops the run with one clear error instead of guessing.
- JSON only (lm-eval's own ``--use_cache`` stores pickles in SQLite; unpickling a file is
  running code, so this project never does it).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError

FSYNC_EVERY_S = 1.0


def request_key(model_id: str, prompt: str, gen_kwargs) -> str:
    settings = json.dumps(gen_kwargs, sort_keys=True, default=str)
    h = hashlib.sha256()
    for part in (model_id, prompt, settings):
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def folder_fingerprint(path: str | os.PathLike) -> str:
    """sha256 over a model folder's small files' contents and its large files' names, sizes and mtimes."""
    root = Path(path).expanduser()
    if not root.is_dir():
        return ""
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(str(f.relative_to(root)).encode())
        if st.st_size <= 1 << 20:  # configs, tokenizer files, chat templates: by content
            h.update(f.read_bytes())
        else:  # weights: by size and modification time (hashing gigabytes per run would cost seconds)
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def model_identity(model: str, model_args: str, extra: str = "") -> str:
    """What a cached answer depends on besides the prompt: model type, arguments, weights, backend."""
    args = dict(p.split("=", 1) for p in filter(None, (s.strip() for s in model_args.split(","))) if "=" in p)
    pretrained = args.get("pretrained") or args.get("model") or ""
    return json.dumps({"model": model, "model_args": model_args, "weights": folder_fingerprint(pretrained),
                       "extra": extra}, sort_keys=True)


class GenerationCache:
    """The JSONL file of one model identity; ``get`` answers from it, ``add`` appends to it."""

    def __init__(self, path: str | os.PathLike, model_id: str, *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self.model_id = model_id
        self.entries: dict[str, str] = {}
        self.loaded = 0
        self._fh = None
        self._last_sync = 0.0
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        keep = len(data)
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        elif lines:  # no newline at the end: the last line was being written when the run died
            keep = len(data) - len(lines[-1])
            lines.pop()
        for lineno, raw in enumerate(lines, start=1):
            try:
                obj = json.loads(raw.decode("utf-8"))
                key, response = obj["key"], obj["response"]
                if not isinstance(key, str) or not isinstance(response, str):
                    raise TypeError
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                raise ConsistbenchError(f"{self.path}:{lineno}: not a generation cache line; move the file away "
                                        "or pass --no-generation-cache") from None
            self.entries[key] = response
        self.loaded = len(self.entries)
        if keep != len(data) and not self.readonly:
            with open(self.path, "r+b") as fh:
                fh.truncate(keep)

    def key(self, prompt: str, gen_kwargs) -> str:
        return request_key(self.model_id, prompt, gen_kwargs)

    def get(self, prompt: str, gen_kwargs) -> str | None:
        return self.entries.get(self.key(prompt, gen_kwargs))

    def add(self, prompt: str, gen_kwargs, response: str) -> None:
        key = self.key(prompt, gen_kwargs)
        if self.entries.get(key) == response:
            return
        self.entries[key] = response
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(json.dumps({"key": key, "response": response}, ensure_ascii=False) + "\n")
        self._fh.flush()  # in the kernel now: survives the process being killed
        if time.monotonic() - self._last_sync >= FSYNC_EVERY_S:
            self.sync()

    def sync(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fh is not None:
            self.sync()
            self._fh.close()
            self._fh = None


def cache_hook_for(cache: GenerationCache):
    """An lm-eval ``CacheHook`` that appends each finished ``generate_until`` answer to ``cache``."""
    from lm_eval.api.model import CacheHook

    class JsonlCacheHook(CacheHook):
        def __init__(self):
            super().__init__(None)

        def add_partial(self, attr, req, res):
            if attr == "generate_until" and isinstance(res, str):
                prompt, gen_kwargs = req
                cache.add(prompt, gen_kwargs, res)

        def sync(self):
            cache.sync()

    return JsonlCacheHook()
