"""Run by tests/test_trainer_ddp.py under ``accelerate launch``: one ``train()`` call.

usage: ddp_train.py MODEL DATA OUT CONFIG_JSON
"""

from __future__ import annotations

import json
import sys

from consistbench.reference_method.consistency_config import ConsistencyConfig
from consistbench.reference_method.train import train
from consistbench.reference_method.triplets import MiningConfig

if __name__ == "__main__":
    model, data, out, cfg = sys.argv[1:5]
    train(model, data, "all", out, ConsistencyConfig(**json.loads(cfg)), MiningConfig(negatives="random"),
          log=lambda _: None)
