"""Merge tests' shared pico models and helpers (a pytest plugin: each ``tests/test_merge_*.py``
file names it in ``pytest_plugins``, so the session fixtures are built once for all of them).

``pico``: a pico Llama family (a base and three fine-tunes, :mod:`tests.pico_models`); ``states``:
their tensors; ``config``: a MergeConfig over them; ``write_weights_doc``: a hand-made
consistency-weights file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from consistbench.reference_method.merge import MergeConfig
from tests import pico_models
from tests.pico_models import load_state


FTS = ("ft1", "ft2", "ft3")


def llama_group(name: str) -> int | str:
    """Where a pico Llama tensor belongs, written out for the tests (not the code under test)."""
    m = re.match(r"model\.layers\.(\d+)\.", name)
    if m:
        return int(m.group(1))
    return "embed" if name.startswith("model.embed_tokens.") else "final"


@pytest.fixture(scope="session")
def pico(tmp_path_factory, smollm2_dir) -> dict[str, Path]:
    return pico_models.family(tmp_path_factory.mktemp("pico"), smollm2_dir)


@pytest.fixture(scope="session")
def states(pico) -> dict[str, dict[str, torch.Tensor]]:
    return {k: load_state(v) for k, v in pico.items()}


def config(pico, method: str, weights=(1.0, 1.0, 1.0), models=FTS, **extra) -> MergeConfig:
    return MergeConfig.from_dict({"method": method, "base": str(pico["base"]),
                                  "models": [{"path": str(pico[m]), "weight": w} for m, w in zip(models, weights)],
                                  **extra})


def assert_close(out: dict, expected: dict, atol: float = 1e-6) -> None:
    assert set(out) == set(expected)
    for name in expected:
        err = float((out[name] - expected[name]).abs().max())
        assert err <= atol, f"{name}: max error {err}"


def no_leftovers(parent: Path, name: str) -> None:
    assert not (parent / name).exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{name}.")], "temporary folder left behind"


def write_weights_doc(path: Path, pico, rows: dict, models=FTS, value=None) -> Path:
    """A hand-made consistency weights file (format of reference_method.weights_file)."""
    from consistbench.reference_method.weights_file import FORMAT, FORMAT_VERSION

    doc = {"format": FORMAT, "version": FORMAT_VERSION, "num_layers": pico_models.NUM_LAYERS,
           "base": {"path": str(pico["base"]), "label": "base"},
           "models": [{"path": str(pico[m].resolve()), "label": m} for m in models],
           "dev": {"path": None, "n_queries": 0, "sha256": ""}, "options": {
               "pooling": "mean", "distance": "mean_abs", "compare": "raw", "normalisation": "softmax",
               "temperature": 0.05, "temperature_scale": "base", "power": 2.0, "total": 1.0, "batch_size": 8,
               "max_queries": 256, "chat_template": True, "encoder": None},
           "weights": rows}
    path.write_text(json.dumps(doc, allow_nan=True))
    return path


ROWS = {"embed": [0.2, 0.3, 0.5], "layers": [[0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.34, 0.33, 0.33]],
        "final": [0.05, 0.9, 0.05]}
