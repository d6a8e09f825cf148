"""Training under ``accelerate launch`` with two processes on CPU (gloo) equals the one-process run with
the same global batch: the same per-step CE and triplet loss (rel 1e-5) and the same LoRA-merged
weights (atol 1e-6; SGD, so a float-rounding difference in a gradient stays a difference of that size),
with answer-only logits and with the padding-free, shared-prefix path (which call the model through
DDP's wrapper so that gradients are synchronised, and scale the CE as Trainer does).

``accelerate launch --multi_gpu`` on a machine without GPUs starts torch.distributed's CPU backend
(``--cpu`` with several processes needs MPI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from consistbench.reference_method.consistency_config import ConsistencyConfig
from consistbench.reference_method.train import train
from consistbench.reference_method.triplets import MiningConfig
from tests.trainer_fixtures import load_model, state

pytest_plugins = ["tests.trainer_fixtures"]  # the fixed tiny Llama, its tokenizer, the synthetic set

SCRIPT = Path(__file__).with_name("ddp_train.py")


def _settings(ckpt: Path, **kw) -> dict:
    return dict(output_dir=str(ckpt), use_cpu=True, dataloader_pin_memory=False, disable_tqdm=True, seed=0,
                save_strategy="no", logging_steps=1, max_steps=3, learning_rate=0.5, optim="sgd",
                lr_scheduler_type="constant", alpha=1.0, margin=1.0, use_lora=True, lora_r=4, lora_alpha=8, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("compute", [dict(answer_logits_only=True),
                                     dict(answer_logits_only=True, padding_free=True, share_prefix=True)],
                         ids=["answer_logits_only", "padding_free+share_prefix"])
def test_two_processes_train_the_one_process_model(fixed_llama, synth_file, tmp_path, compute):
    one = train(fixed_llama, synth_file, "all", tmp_path / "one",
                ConsistencyConfig(**_settings(tmp_path / "c1", per_device_train_batch_size=2, **compute)),
                MiningConfig(negatives="random"), log=lambda _: None)
    two = tmp_path / "two"
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533", str(SCRIPT),
           str(fixed_llama), str(synth_file), str(two),
           json.dumps(_settings(tmp_path / "c2", per_device_train_batch_size=1, **compute))]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card1 = json.loads((one / "consistbench_train.json").read_text())
    card2 = json.loads((two / "consistbench_train.json").read_text())
    assert card2["compute"]["answer_logits_only"] is True  # not switched off under several processes
    h1, h2 = card1["loss_history"], card2["loss_history"]
    assert [h["step"] for h in h2] == [0, 1, 2] == [h["step"] for h in h1]
    for a, b in zip(h1, h2):
        for key in ("ce", "triplet", "loss", "d_ap", "d_an"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key
    w1, w2 = state(one), state(two)
    base = load_model(fixed_llama).state_dict()
    key = "model.layers.0.self_attn.q_proj.weight"
    assert (w1[key] - base[key]).abs().max() > 1e-4  # trained
    for k in w1:
        assert torch.allclose(w2[k], w1[k], rtol=0, atol=1e-6), (k, (w2[k] - w1[k]).abs().max().item())
