"""``consistbench merge --export-mergekit``: mergekit, run on the exported YAML, gives the same
model as consistbench's merge where the methods agree (pico Llama models)."""

from __future__ import annotations

from pathlib import Path

import yaml

from consistbench.benchmark.cli import main
from consistbench.reference_method.merge import MergeConfig, export_mergekit, merge
from tests.merge_fixtures import ROWS, assert_close, config, write_weights_doc
from tests.pico_models import load_state

pytest_plugins = ["tests.merge_fixtures"]  # the pico models, built once per session


# ---------------------------------------------------------------------------------------------
# mergekit

def _run_mergekit(yaml_path: Path, out: Path, seed: int | None = None) -> dict:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    text = yaml_path.read_text()
    cfg = MergeConfiguration.model_validate(yaml.safe_load(text))
    run_merge(cfg, str(out), MergeOptions(write_model_card=False, quiet=True, random_seed=seed))
    return load_state(out)


def test_mergekit_export_round_trips_task_arithmetic(pico, tmp_path):
    cfg = config(pico, "task_arithmetic", (0.3, 0.5, -0.2))
    export_mergekit(cfg, tmp_path / "mk.yaml")
    assert yaml.safe_load((tmp_path / "mk.yaml").read_text())["merge_method"] == "task_arithmetic"
    theirs = _run_mergekit(tmp_path / "mk.yaml", tmp_path / "mk_out")
    merge(cfg, tmp_path / "ours")
    assert_close(theirs, load_state(tmp_path / "ours"), atol=1e-6)


def test_mergekit_export_round_trips_consistency_per_layer_weights(pico, tmp_path):
    wfile = write_weights_doc(tmp_path / "w.json", pico, ROWS)
    cfg = config(pico, "consistency", parameters={"weights_file": str(wfile)})
    assert main(["merge", "--export-mergekit", str(tmp_path / "mk.yaml"), "--quiet", "--",
                 _yaml(tmp_path, cfg)]) == 0
    theirs = _run_mergekit(tmp_path / "mk.yaml", tmp_path / "mk_out")
    merge(cfg, tmp_path / "ours")
    assert_close(theirs, load_state(tmp_path / "ours"), atol=1e-6)


def test_mergekit_export_of_linear_and_ties_with_unit_weights_match(pico, tmp_path):
    for method, params in (("linear", {}), ("ties", {"density": 0.5})):
        cfg = config(pico, method, parameters=params)
        export_mergekit(cfg, tmp_path / f"{method}.yaml")
        theirs = _run_mergekit(tmp_path / f"{method}.yaml", tmp_path / f"{method}_mk")
        merge(cfg, tmp_path / method)
        assert_close(theirs, load_state(tmp_path / method), atol=1e-6)


def _yaml(tmp_path: Path, cfg: MergeConfig) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    return str(path)
