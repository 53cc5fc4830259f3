"""Durable files: what the node acknowledges or queues must survive a crash or a power cut."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def write_durably(path: Path, data: bytes) -> Path:
    """Temporary file, fsync, rename, fsync of the folder; owner-only (the files carry patient data)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb", opener=lambda p, flags: os.open(p, flags, 0o600)) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return path


def object_path(root: Path, study_uid: str, sop_uid: str) -> Path:
    """Where an object of a study lives under ``root`` (hashed names: UIDs can be long, and are not shown)."""
    folder = hashlib.sha256(study_uid.encode()).hexdigest()[:24]
    return root / folder / f"{hashlib.sha256(sop_uid.encode()).hexdigest()[:32]}.dcm"
