"""Lazy safetensors input and streaming safetensors output.

Input: :class:`LazyModel` reads every shard's header (names, dtypes, shapes) without loading a
tensor, then hands out one tensor, or a slice of rows of one, at a time through ``safe_open``
(memory-mapped; at most two shards open per model). Nothing else of a model is kept.

Output: :class:`StreamingWriter` knows every output tensor's name, dtype and shape in advance
(they are the base's), so it writes each shard's header first and then the tensors' bytes in
order as they are produced, slice by slice: no output shard is ever assembled in memory.
The files are ordinary safetensors (contiguous data, header padded to 8 bytes) with the usual
``model.safetensors.index.json`` when there is more than one shard.
"""

from __future__ import annotations

import json
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# safetensors dtype names and their item sizes
DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


def torch_dtype(name: str):
    import torch

    return {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
            "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
            "BOOL": torch.bool}[name]


def st_dtype(dtype) -> str:
    import torch

    return {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
            torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
            torch.bool: "BOOL"}[dtype]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str            # safetensors dtype name, e.g. "F32"
    shape: tuple[int, ...]
    file: str             # shard file name inside the model folder
    offset: int = 0       # start of its data in that file (reading in this order is sequential)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_SIZES[self.dtype]


def read_header(path: Path) -> dict:
    """The JSON header of one safetensors file (ConsistbenchError if it is not one)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise ValueError("file shorter than 8 bytes")
            (n,) = struct.unpack("<Q", raw)
            if n > 100 * 2**20:
                raise ValueError(f"header length {n} is implausible")
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as exc:
        raise ConsistbenchError(f"{path}: not a readable safetensors file ({exc})") from None
    header.pop("__metadata__", None)
    return header


class LazyModel:
    """A model folder's safetensors weights, read one tensor at a time."""

    def __init__(self, path: str | Path, label: str | None = None):
        self.path = Path(path)
        self.label = label or self.path.name
        if not self.path.is_dir():
            raise ConsistbenchError(f"model {self.label}: {self.path} is not a directory")
        cfg = self.path / "config.json"
        if not cfg.is_file():
            raise ConsistbenchError(f"model {self.label}: no config.json in {self.path}")
        try:
            self.config = json.loads(cfg.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConsistbenchError(f"model {self.label}: {cfg} is not valid JSON ({exc.msg})") from None
        self.tensors: dict[str, TensorInfo] = self._index()
        self._handles: OrderedDict[str, object] = OrderedDict()

    def _index(self) -> dict[str, TensorInfo]:
        index = self.path / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ConsistbenchError(f"model {self.label}: {index} has no valid 'weight_map'") from None
            files = list(dict.fromkeys(weight_map.values()))
        elif (self.path / SINGLE_FILE).is_file():
            weight_map, files = None, [SINGLE_FILE]
        else:
            others = sorted(p.name for p in self.path.glob("*.safetensors"))
            if len(others) == 1:
                weight_map, files = None, others
            elif others:
                raise ConsistbenchError(f"model {self.label}: several .safetensors files but no {INDEX_FILE} in {self.path}")
            else:
                bins = sorted(p.name for p in self.path.glob("*.bin"))
                hint = f" (found {bins[0]}: re-save it with save_pretrained(safe_serialization=True))" if bins else ""
                raise ConsistbenchError(f"model {self.label}: no safetensors weights in {self.path}{hint}")
        tensors: dict[str, TensorInfo] = {}
        for fname in files:
            fpath = self.path / fname
            if not fpath.is_file():
                raise ConsistbenchError(f"model {self.label}: shard {fname} listed in {INDEX_FILE} is missing from {self.path}")
            for name, meta in read_header(fpath).items():
                if weight_map is not None and weight_map.get(name) != fname:
                    continue
                if meta.get("dtype") not in DTYPE_SIZES:
                    raise ConsistbenchError(f"model {self.label}: tensor {name} has unsupported dtype {meta.get('dtype')}")
                tensors[name] = TensorInfo(name, meta["dtype"], tuple(meta["shape"]), fname,
                                           int(meta.get("data_offsets", [0])[0]))
        if weight_map is not None:
            for name, fname in weight_map.items():
                if name not in tensors:
                    raise ConsistbenchError(f"model {self.label}: tensor {name} listed in {INDEX_FILE} is not in shard {fname}")
        return tensors

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    @property
    def files(self) -> list[Path]:
        return [self.path / f for f in dict.fromkeys(t.file for t in self.tensors.values())]

    def _handle(self, fname: str):
        from safetensors import safe_open

        h = self._handles.get(fname)
        if h is None:
            while len(self._handles) >= 2:
                _, old = self._handles.popitem(last=False)
                old.__exit__(None, None, None)
            h = safe_open(str(self.path / fname), framework="pt", device="cpu")
            h.__enter__()
            self._handles[fname] = h
        else:
            self._handles.move_to_end(fname)
        return h

    def get(self, name: str, rows: tuple[int, int] | None = None):
        """Tensor ``name`` (a fresh CPU tensor), or only its rows ``[start, stop)`` of dim 0."""
        info = self.tensors[name]
        h = self._handle(info.file)
        if rows is None or not info.shape:
            return h.get_tensor(name)
        return h.get_slice(name)[rows[0]:rows[1]]

    def close(self) -> None:
        while self._handles:
            _, h = self._handles.popitem()
            h.__exit__(None, None, None)


class StreamingWriter:
    """Write tensors of known names/dtypes/shapes into safetensors shards, in the given order.

    ``entries`` is ``[(name, dtype_name, shape), ...]`` in write order. Call :meth:`write` with
    consecutive pieces (row slices) of each tensor in that order; :meth:`close` checks that every
    byte was written and writes the index when there are several shards.
    """

    def __init__(self, out_dir: Path, entries: list[tuple[str, str, tuple[int, ...]]], max_shard_bytes: int,
                 metadata: dict[str, str] | None = None):
        self.out_dir = Path(out_dir)
        self.metadata = {"format": "pt", **(metadata or {})}
        shards: list[list[tuple[str, str, tuple[int, ...], int]]] = [[]]
        size = 0
        for name, dtype, shape in entries:
            n = DTYPE_SIZES[dtype]
            for s in shape:
                n *= s
            if shards[-1] and size + n > max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append((name, dtype, tuple(shape), n))
            size += n
        self.shards = shards
        total = len(shards)
        self.files = [SINGLE_FILE] if total == 1 else [f"model-{i + 1:05d}-of-{total:05d}.safetensors" for i in range(total)]
        self.total_size = sum(e[3] for shard in shards for e in shard)
        self._queue = [(i, e) for i, shard in enumerate(shards) for e in shard]
        self._pos = 0          # index into _queue of the tensor being written
        self._written = 0      # bytes written of the current tensor
        self._shard = -1
        self._fh = None

    def _open_shard(self, i: int) -> None:
        if self._fh is not None:
            self._fh.close()
        header: dict = {"__metadata__": self.metadata}
        offset = 0
        for name, dtype, shape, n in self.shards[i]:
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
            offset += n
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._fh = open(self.out_dir / self.files[i], "wb")
        self._fh.write(struct.pack("<Q", len(raw)))
        self._fh.write(raw)
        self._shard = i

    def write(self, name: str, tensor) -> None:
        """Append a piece (whole tensor or the next rows) of tensor ``name``."""
        import torch

        if self._pos >= len(self._queue):
            raise RuntimeError(f"writer: unexpected tensor {name} after the last one")
        shard, (expected, dtype, _shape, n) = self._queue[self._pos]
        if name != expected:
            raise RuntimeError(f"writer: expected tensor {expected}, got {name}")
        if st_dtype(tensor.dtype) != dtype:
            raise RuntimeError(f"writer: {name} should be {dtype}, got {tensor.dtype}")
        if shard != self._shard:
            self._open_shard(shard)
        t = tensor.detach().contiguous().reshape(-1)
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        data = memoryview(t.numpy()).cast("B")
        if self._written + len(data) > n:
            raise RuntimeError(f"writer: too many bytes for {name}")
        self._fh.write(data)
        self._written += len(data)
        if self._written == n:
            self._pos += 1
            self._written = 0

    def close(self) -> list[str]:
        if self._pos < len(self._queue) or self._written:
            missing = self._queue[self._pos][1][0] if self._pos < len(self._queue) else "?"
            raise RuntimeError(f"writer: output incomplete (next tensor {missing})")
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if len(self.files) > 1:
            weight_map = {e[0]: self.files[i] for i, shard in enumerate(self.shards) for e in shard}
            (self.out_dir / INDEX_FILE).write_text(
                json.dumps({"metadata": {"total_size": self.total_size}, "weight_map": weight_map}, indent=2) + "\n",
                encoding="utf-8")
        return self.files

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
