"""Seeds of the data pipeline: derived from (base seed, keys), never from global state,
so an epoch's batches and augmentations depend on (seed, epoch) only."""
import os
import random
from contextlib import contextmanager

import numpy as np
import torch


def epoch_seed(seed, *keys):
    """A well-mixed 32-bit seed from a base seed and integer keys (epoch, stream, ...)."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1, dtype=np.uint32)[0])


def fresh_seed():
    """A random base seed, for SEED < 0 ("randomise everything" in Dassl)."""
    return int.from_bytes(os.urandom(4), "little")


@contextmanager
def local_rng(seed):
    """Run a block with torch's CPU RNG and Python's `random` seeded to `seed`, then
    restore both, so the block neither depends on nor disturbs the global streams."""
    torch_state, python_state = torch.default_generator.get_state(), random.getstate()
    torch.default_generator.manual_seed(seed)  # CPU only: CUDA streams stay untouched
    random.seed(seed)
    try:
        yield
    finally:
        torch.default_generator.set_state(torch_state)
        random.setstate(python_state)
