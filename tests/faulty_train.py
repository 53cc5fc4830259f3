"""Launched by tests/test_distributed.py under `accelerate launch`: the real training script, with a fault
injected on rank 1 only (argv[1]: "step" raises inside its first training step, "data" inside its loader)."""

import os
import sys

from mura_mt.data import dataset
from mura_mt.training import loop as training

FAULT = sys.argv.pop(1)
RANK = int(os.environ.get("RANK", "0"))

if RANK == 1 and FAULT == "step":
    _train_one_epoch = training.train_one_epoch

    def failing_epoch(*args, **kwargs):
        raise RuntimeError("injected fault in rank 1's training step")

    training.train_one_epoch = failing_epoch
elif RANK == 1 and FAULT == "data":

    def failing_batch(self, indices):
        raise OSError("injected fault in rank 1's data loading")

    dataset.CachedImages.__getitems__ = failing_batch

if __name__ == "__main__":
    from scripts.train import main

    main()
