"""Per-layer merges for every decoder-block naming: tiny random models of several architectures
(Llama, GPT-2, GPT-NeoX, OPT, Falcon, BLOOM) merged with per-layer weights, each tensor checked
against the row it must get; tensors that belong nowhere and unknown architectures are refused."""

from __future__ import annotations

import glob
import json
import shutil
from pathlib import Path

import pytest
import torch

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from tests.pico_models import load_state

NUM_LAYERS = 3
ROWS = {"embed": [0.2, 0.8], "layers": [[0.9, 0.1], [0.5, 0.5], [0.05, 0.95]], "final": [0.7, 0.3]}

# What the tests expect, written out by hand per architecture (not read from the code under test):
# the block prefix, and every tensor outside the blocks with its row.
ARCHS = {
    "llama": ("model.layers.", {"model.embed_tokens.weight": "embed", "model.norm.weight": "final",
                                "lm_head.weight": "final"}),
    "gpt2": ("transformer.h.", {"transformer.wte.weight": "embed", "transformer.wpe.weight": "embed",
                                "transformer.ln_f.weight": "final", "transformer.ln_f.bias": "final",
                                "lm_head.weight": "final"}),
    "gpt_neox": ("gpt_neox.layers.", {"gpt_neox.embed_in.weight": "embed", "gpt_neox.final_layer_norm.weight": "final",
                                      "gpt_neox.final_layer_norm.bias": "final", "embed_out.weight": "final"}),
    "opt": ("model.decoder.layers.", {"model.decoder.embed_tokens.weight": "embed",
                                      "model.decoder.embed_positions.weight": "embed",
                                      "model.decoder.final_layer_norm.weight": "final",
                                      "model.decoder.final_layer_norm.bias": "final", "lm_head.weight": "final"}),
    "falcon": ("transformer.h.", {"transformer.word_embeddings.weight": "embed", "transformer.ln_f.weight": "final",
                                  "transformer.ln_f.bias": "final", "lm_head.weight": "final"}),
    "bloom": ("transformer.h.", {"transformer.word_embeddings.weight": "embed",
                                 "transformer.word_embeddings_layernorm.weight": "embed",
                                 "transformer.word_embeddings_layernorm.bias": "embed",
                                 "transformer.ln_f.weight": "final", "transformer.ln_f.bias": "final",
                                 "lm_head.weight": "final"}),
}


def tiny_config(model_type: str, tok, **extra):
    from transformers import AutoConfig

    kw = dict(vocab_size=len(tok), hidden_size=16, num_hidden_layers=NUM_LAYERS, num_attention_heads=2,
              intermediate_size=32, max_position_embeddings=256, bos_token_id=tok.bos_token_id,
              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    if model_type == "opt":
        kw["ffn_dim"] = 32
    return AutoConfig.for_model(model_type, **{**kw, **extra})


def expected_group(arch: str, name: str):
    prefix, outside = ARCHS[arch]
    if name.startswith(prefix):
        return int(name[len(prefix):].split(".")[0])
    return outside[name]  # KeyError: a tensor the test does not know (the oracle must cover all)


@pytest.fixture(scope="module")
def families(tmp_path_factory, smollm2_dir) -> dict[str, dict[str, Path]]:
    """Per architecture: a random base and two perturbed "fine-tunes", with SmolLM2's tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    root = tmp_path_factory.mktemp("archs")
    out = {}
    for arch in ARCHS:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(tiny_config(arch, tok)).eval()
        base = {k: v.clone() for k, v in model.state_dict().items()}
        paths = {}
        for name, std in (("base", 0.0), ("ft1", 0.01), ("ft2", 0.02)):
            g = torch.Generator().manual_seed(len(paths) + 1)
            model.load_state_dict({k: v + std * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                                   for k, v in base.items()})
            paths[name] = root / arch / name
            model.save_pretrained(paths[name])
            tok.save_pretrained(paths[name])
        out[arch] = paths
    return out


def weights_doc(path: Path, paths: dict[str, Path], rows: dict = ROWS) -> Path:
    from consistbench.reference_method.weights_file import FORMAT, FORMAT_VERSION, WeightsOptions

    doc = {"format": FORMAT, "version": FORMAT_VERSION, "num_layers": len(rows["layers"]),
           "base": {"path": str(paths["base"].resolve()), "label": "base"},
           "models": [{"path": str(paths[m].resolve()), "label": m} for m in ("ft1", "ft2")],
           "dev": {"path": None, "n_queries": 0, "sha256": ""}, "options": WeightsOptions().model_dump(),
           "weights": rows}
    path.write_text(json.dumps(doc))
    return path


def consistency_config(paths: dict[str, Path], wfile: Path, **params):
    from consistbench.reference_method.merge import MergeConfig

    return MergeConfig.from_dict({"method": "consistency", "base": str(paths["base"]),
                                  "models": [{"path": str(paths[m])} for m in ("ft1", "ft2")],
                                  "parameters": {"weights_file": str(wfile), **params}})


def test_every_layout_assigns_every_saved_tensor_of_a_tiny_model(tmp_path):
    """Each model_type of the layout table: a tiny random model saved by transformers has every
    tensor in a block of its layer, the embeddings or the output side, and the layer count agrees
    with transformers' num_hidden_layers."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    from consistbench.reference_method.merge.layout import LAYOUTS, assign, layout_for, num_layers

    tiny = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                intermediate_size=32, vocab_size=64, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                eos_token_id=2, head_dim=8, tie_word_embeddings=False)
    special = {"falcon": {"head_dim": None}, "gpt_neo": {"attention_types": [[["global", "local"], 1]], "num_layers": 2},
               "bamba": {"mamba_n_heads": 4, "mamba_d_head": 8}, "mamba2": {"num_heads": 4, "head_dim": 8, "n_groups": 1}}
    torch.manual_seed(0)
    for layout in LAYOUTS:
        for model_type in layout.model_types:
            kw = {k: v for k, v in {**tiny, **special.get(model_type, {})}.items() if v is not None}
            config = AutoConfig.for_model(model_type, **kw)
            out = tmp_path / model_type
            AutoModelForCausalLM.from_config(config).save_pretrained(out)
            names = []
            for f in glob.glob(str(out / "*.safetensors")):
                with safe_open(f, "pt") as fh:
                    names += list(fh.keys())
            saved = json.loads((out / "config.json").read_text())
            assert layout_for(saved) is layout, model_type
            n = num_layers(saved, layout)
            assert n == AutoConfig.from_pretrained(out).num_hidden_layers == 2, model_type
            groups = assign(names, layout, n)
            assert set(groups.values()) >= {0, 1, "embed"}, (model_type, set(groups.values()))
            assert "final" in groups.values() or not layout.final, model_type
            shutil.rmtree(out)


def test_per_layer_merge_gives_each_block_its_own_layers_weight(families, tmp_path):
    """A real consistency (per-layer task-arithmetic) merge on six architectures: every tensor is
    base + sum_k w_k delta_k with the row of its block, of the embeddings or of the output side."""
    from consistbench.reference_method.merge import merge

    for arch, paths in families.items():
        wfile = weights_doc(tmp_path / f"{arch}.json", paths)
        out = tmp_path / f"{arch}-merged"
        merge(consistency_config(paths, wfile), out)
        base, ft1, ft2, got = (load_state(p) for p in (paths["base"], paths["ft1"], paths["ft2"], out))
        assert set(got) == set(base)
        seen = set()
        for name in base:
            g = expected_group(arch, name)
            seen.add(g)
            w = ROWS["layers"][g] if isinstance(g, int) else ROWS[g]
            expected = base[name] + w[0] * (ft1[name] - base[name]) + w[1] * (ft2[name] - base[name])
            err = float((got[name] - expected).abs().max())
            assert err <= 1e-6, f"{arch} {name}: max error {err}"
        assert seen == {0, 1, 2, "embed", "final"}, (arch, seen)


def test_falcon_blocks_get_their_layer_rows_not_the_final_row(families, tmp_path):
    """Falcon names its blocks transformer.h.N. Each block's tensors get their own layer's row;
    what a layers.N pattern would have done (every block with the final-norm row) is a different
    tensor, so the check below tells the two apart."""
    from consistbench.reference_method.merge import merge

    paths = families["falcon"]
    wfile = weights_doc(tmp_path / "falcon.json", paths)
    merge(consistency_config(paths, wfile), tmp_path / "merged")
    base, ft1, ft2, got = (load_state(p) for p in (paths["base"], paths["ft1"], paths["ft2"], tmp_path / "merged"))
    blocks = [n for n in base if n.startswith("transformer.h.")]
    assert len({n.split(".")[2] for n in blocks}) == NUM_LAYERS
    for name in blocks:
        layer = int(name.split(".")[2])

        def with_row(w):
            return base[name] + w[0] * (ft1[name] - base[name]) + w[1] * (ft2[name] - base[name])

        torch.testing.assert_close(got[name], with_row(ROWS["layers"][layer]), rtol=0, atol=1e-6)
        assert float((got[name] - with_row(ROWS["final"])).abs().max()) > 1e-4, name
    # the card reports the per-layer rows it applied
    assert "| layer 2 | 0.0500 | 0.9500 |" in (tmp_path / "merged" / "README.md").read_text()


def test_a_tensor_outside_every_group_is_refused(families, tmp_path, capsys):
    import yaml

    paths = {k: tmp_path / k for k in ("base", "ft1", "ft2")}
    for k, src in families["llama"].items():
        shutil.copytree(src, paths[k])
    # an extra module the Llama layout does not know, in every model (so the inputs still match)
    from safetensors.torch import load_file, save_file

    for p in paths.values():
        t = load_file(p / "model.safetensors")
        t["model.extra_projection.weight"] = torch.zeros(4, 4)
        save_file(t, p / "model.safetensors", metadata={"format": "pt"})
    wfile = weights_doc(tmp_path / "w.json", paths)
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(yaml.safe_dump(consistency_config(paths, wfile).model_dump()))
    capsys.readouterr()
    assert main(["merge", str(cfg), "-o", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("consistbench: error:") and "\n" not in err, err
    assert "model.extra_projection.weight" in err and "refusing to guess" in err
    assert not (tmp_path / "out").exists()
    # a block index beyond num_hidden_layers (e.g. extra prediction layers) is refused too
    for p in paths.values():
        t = load_file(p / "model.safetensors")
        t["model.layers.3.mlp.up_proj.weight"] = t.pop("model.extra_projection.weight")
        save_file(t, p / "model.safetensors", metadata={"format": "pt"})
    assert main(["merge", str(cfg), "-o", str(tmp_path / "out"), "--quiet"]) == 2
    assert "model.layers.3.mlp.up_proj.weight" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_architecture_missing_from_the_table_is_refused_for_per_layer_weights(families, tmp_path):
    from consistbench.reference_method.merge import MergeConfig, merge

    paths = {k: tmp_path / k for k in ("base", "ft1", "ft2")}
    for k, src in families["llama"].items():
        shutil.copytree(src, paths[k])
        cfg = json.loads((paths[k] / "config.json").read_text())
        cfg["model_type"], cfg["architectures"] = "my_custom_lm", ["MyCustomForCausalLM"]
        (paths[k] / "config.json").write_text(json.dumps(cfg))
    wfile = weights_doc(tmp_path / "w.json", paths)
    with pytest.raises(ConsistbenchError, match="'my_custom_lm'.*not in consistbench's table"):
        merge(consistency_config(paths, wfile), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # methods that treat every tensor alike still merge it
    merge(MergeConfig.from_dict({"method": "task_arithmetic", "base": str(paths["base"]),
                                 "models": [{"path": str(paths["ft1"]), "weight": 0.5}]}), tmp_path / "ta")
    base, ft1, got = (load_state(p) for p in (paths["base"], paths["ft1"], tmp_path / "ta"))
    for name in base:
        torch.testing.assert_close(got[name], base[name] + 0.5 * (ft1[name] - base[name]), rtol=0, atol=1e-6)


def test_consistency_weights_hook_the_blocks_of_each_architecture(families):
    """The similarity rows are measured at the modules the layout names: row l equals the
    similarity of the mean-pooled question tokens of hidden_states[l + 1] (block l's output)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from consistbench.reference_method.consistency_weights import Query, _render, model_similarities
    from consistbench.reference_method.weights_file import WeightsOptions, row_keys

    queries = [Query("Use copy.copy() for shallow copies.", "How do I copy a list?"),
               Query("sorted() takes a key function.", "How to sort a dict by value"),
               Query("open() returns a file object.", "How do I read a file line by line?")]
    options = WeightsOptions(batch_size=2)
    for arch in ("opt", "gpt2", "falcon"):
        path = families[arch]["ft1"]
        sims = model_similarities(path, queries, options)
        assert list(sims) == row_keys(NUM_LAYERS), arch
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        pooled = {l: [] for l in range(NUM_LAYERS - 1)}
        for q in queries:
            text, (start, end), special = _render(tok, q, True)
            enc = tok(text, return_offsets_mapping=True, return_tensors="pt", add_special_tokens=special)
            offsets = enc.pop("offset_mapping")[0]
            mask = torch.tensor([(e > start) and (s < end) and (e > s) for s, e in offsets.tolist()])
            with torch.no_grad():
                hs = model(**enc, output_hidden_states=True).hidden_states
            for l in pooled:
                pooled[l].append(torch.nn.functional.normalize(hs[l + 1][0][mask].mean(0), dim=-1))
        for l, vectors in pooled.items():
            p = torch.stack(vectors)
            torch.testing.assert_close(torch.from_numpy(sims[str(l)]), p @ p.T, rtol=0, atol=1e-4,
                                       msg=f"{arch} layer {l}")
