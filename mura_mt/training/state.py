"""Resumable training state: Accelerate's ``save_state`` made atomic.

Each epoch's state is written to ``state/.epoch_NNNN.tmp`` by every process, then the main process renames
it to ``state/epoch_NNNN`` and drops a COMPLETE marker. Resume loads only the newest folder with the marker,
so a run killed mid-save restarts from the previous complete state. Only the run's own folder is ever
loaded (the state contains pickled objects; never point it at a folder you did not write).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from accelerate import Accelerator

COMPLETE_MARKER = "COMPLETE"


def save_state(accelerator: Accelerator, state_root: Path, epoch: int, keep: int = 2) -> Path:
    final = state_root / f"epoch_{epoch:04d}"
    tmp = state_root / f".epoch_{epoch:04d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        (final / COMPLETE_MARKER).touch()
        for old in complete_states(state_root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def complete_states(state_root: Path) -> list[Path]:
    """Complete state folders, oldest first."""
    if not state_root.is_dir():
        return []
    return sorted(p for p in state_root.glob("epoch_*") if (p / COMPLETE_MARKER).exists())


def latest_state(state_root: Path) -> Path | None:
    states = complete_states(state_root)
    return states[-1] if states else None
