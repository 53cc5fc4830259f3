"""Hugging Face ZeroGPU: where the model runs on a Space that attaches a GPU per call.

``spaces`` must be imported before anything initialises CUDA, so ``app.py`` imports this module first. Off a Space
(and where ``spaces`` is not installed) everything here is a no-op: the analysis runs as it is, on the device asked.
"""

from __future__ import annotations

import os

try:  # Hugging Face ZeroGPU: `spaces` must come before anything initialises CUDA; absent elsewhere
    import spaces
except ImportError:
    spaces = None


def on_gpu(analyse, time_limit: float):
    """On a ZeroGPU Space, ``analyse`` runs inside ``@spaces.GPU`` (a GPU is attached for the call only; the
    arguments and result travel to and from a GPU worker process); elsewhere, and where `spaces` is missing, it
    is ``analyse`` itself (``spaces.GPU`` returns the function unchanged off ZeroGPU)."""
    if spaces is None:
        return analyse
    return spaces.GPU(duration=max(1, int(time_limit)))(analyse)


def resolve_device(requested: str) -> str:
    """ "auto": CUDA on a ZeroGPU Space (the model moves there at start-up; ZeroGPU attaches a GPU per call) or
    where a CUDA GPU is present; else the CPU."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if on_zero_gpu() or torch.cuda.is_available() else "cpu"


def on_zero_gpu() -> bool:
    return spaces is not None and os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")
