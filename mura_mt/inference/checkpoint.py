"""Exported checkpoints: a folder with ``model.safetensors`` + ``config.json`` that describes itself.

config.json holds the architecture, the body-part order, the preprocessing, the per-part calibration and
thresholds, metrics, the command that produced it and the sha256 of the weights. Export writes into a
temporary folder and renames it into place, so a reader never sees a half-written checkpoint. Loading reads
safetensors only (never pickle) and refuses weights whose hash or body-part order does not match.
This module is for serving; resumable training state is Accelerate's ``save_state`` (see training/loop.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mura_mt.labels import BODY_PARTS
from mura_mt.model import MultiTaskNet

WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"
EXTRA_PREFIXES = ("ood.",)  # tensors stored beside the weights that are not model parameters
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete, tampered with or made for different code."""


def export(
    directory: str | Path,
    model: MultiTaskNet,
    meta: dict[str, Any],
    dtype: torch.dtype = torch.float32,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``directory`` atomically. ``meta`` must hold ``model`` (backbone name) and ``preprocessing``.

    ``extra_tensors`` (e.g. the out-of-distribution statistics, keys with a ``name.`` prefix that no model
    parameter uses) are stored in their own dtype (``dtype`` is for the weights only) in the same safetensors
    file, so the hash covers them too.
    """
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous().cpu() for k, v in model.state_dict().items()}
    for key, value in (extra_tensors or {}).items():
        if key in state:
            raise ValueError(f"extra tensor {key!r} would overwrite a model parameter")
        state[key] = value.detach().contiguous().cpu()
    save_file(state, tmp / WEIGHTS_NAME)
    config = {
        "format_version": FORMAT_VERSION,
        "body_parts": list(BODY_PARTS),
        "weights_sha256": file_sha256(tmp / WEIGHTS_NAME),
        "weights_dtype": str(dtype).removeprefix("torch."),
        **meta,
    }
    (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def resolve_checkpoint(path_or_hub_id: str | Path) -> Path:
    """A local folder as is; otherwise a Hugging Face Hub repo id, downloaded (safetensors and config only)."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    if path.exists() or str(path_or_hub_id).count("/") != 1:
        raise CheckpointError(f"no checkpoint folder at {path_or_hub_id}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(path_or_hub_id), allow_patterns=[WEIGHTS_NAME, CONFIG_NAME]))
    except Exception as err:
        raise CheckpointError(f"could not fetch {path_or_hub_id} from the Hugging Face Hub: {err}") from err


def load_checkpoint(path_or_hub_id: str | Path) -> tuple[MultiTaskNet, dict[str, Any]]:
    """Rebuild the model from a checkpoint folder (or Hub id); returns (model in eval mode, config dict)."""
    directory = resolve_checkpoint(path_or_hub_id)
    state, config = read_checkpoint(directory)
    return model_from_state(state, config, directory), config


def read_checkpoint(path_or_hub_id: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The verified weights (float32 parameters, the extra tensors left out) and the config of a checkpoint, without
    building the network (an int8 server needs only the anomaly head's weights: ``runners.make_runner``)."""
    directory = resolve_checkpoint(path_or_hub_id)
    weights, config_file = directory / WEIGHTS_NAME, directory / CONFIG_NAME
    if not config_file.is_file() or not weights.is_file():
        raise CheckpointError(f"{directory} needs {WEIGHTS_NAME} and {CONFIG_NAME} (pickled weights are not loaded)")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_file} is not valid JSON: {err}") from None
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{directory}: checkpoint format {config.get('format_version')} is not {FORMAT_VERSION}")
    if tuple(config.get("body_parts", ())) != BODY_PARTS:
        raise CheckpointError(
            f"{directory}: body-part order {config.get('body_parts')} differs from {list(BODY_PARTS)}"
        )
    if file_sha256(weights) != config.get("weights_sha256"):
        raise CheckpointError(f"{weights}: sha256 does not match config.json; the file is corrupt or was replaced")
    state = {
        k: v.float() if v.is_floating_point() else v
        for k, v in load_file(weights).items()
        if not k.startswith(EXTRA_PREFIXES)
    }
    return state, config


def model_from_state(state: dict[str, torch.Tensor], config: dict[str, Any], source: str | Path = "") -> MultiTaskNet:
    """The network of ``config`` with the weights ``state`` (from ``read_checkpoint`` of ``source``), in eval mode."""
    model = MultiTaskNet(config["model"]["backbone"], pretrained=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(
            f"{source}: the weights do not fit the {config['model']['backbone']} architecture: {err}"
        ) from None
    return model.eval()


def checkpoint_config(path_or_hub_id: str | Path) -> dict[str, Any]:
    """A checkpoint's config.json, without loading its weights (provenance: weights_sha256, metrics, command)."""
    config_file = resolve_checkpoint(path_or_hub_id) / CONFIG_NAME
    try:
        return json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {config_file}: {err}") from None


def load_extra_tensors(directory: str | Path, name: str = WEIGHTS_NAME) -> dict[str, torch.Tensor]:
    """The non-parameter tensors of a checkpoint folder, in their stored dtype (call after ``load_checkpoint`` has
    verified its hash), from the weights' file or from another of its safetensors files (``name``: the warning's
    statistics fitted for the int8 graph, whose hash ``runners.verified_int8_graph`` checks)."""
    return {k: v for k, v in load_file(Path(directory) / name).items() if k.startswith(EXTRA_PREFIXES)}


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
