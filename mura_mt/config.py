"""Typed run configuration: frozen dataclasses loaded from YAML, with dotted command-line overrides.

Unknown keys and values of the wrong type raise ``ConfigError``: a typo must never silently fall back to a
default. This module does not import torch.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


@dataclass(frozen=True)
class SyntheticConfig:
    """How to generate the synthetic MURA tree when ``data.kind`` is ``synthetic``."""

    studies_per_part: int = 100
    valid_studies_per_part: int = 25
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are split and sized."""

    kind: str = "mura"  # "mura" (official layout), "synthetic" (generated if missing) or "csv" (own radiographs)
    root: str | None = None  # MURA-v1.1 folder or its parent; for kind=csv the training CSV
    test_csv: str | None = None  # kind=csv only: the held-out CSV evaluate.py reads as split "valid"
    val_fraction: float = 0.1
    split_seed: int = 0
    image_size: int = 224
    cache_dir: str | None = None  # decoded-image cache shared by runs; default $MURA_MT_CACHE or ~/.cache/mura_mt
    cache_wait_minutes: float = 180.0  # how long other processes wait for a machine's first cache build
    max_bad_images: int = 0  # unreadable images tolerated (quarantined and listed) before training aborts
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass(frozen=True)
class ModelConfig:
    """The multi-task network."""

    backbone: str = "resnet18"
    pretrained: bool = True
    pretrained_file: str | None = None  # local weights for the backbone (works offline)
    drop_rate: float = 0.0
    # A mura-mt checkpoint folder to start from (its backbone and all eight heads) instead of ImageNet weights:
    # fine-tuning on a site's own data (scripts/export_site_data.py). Its backbone must be ``backbone``.
    init_from: str | None = None


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation of radiographs (the eval path never augments)."""

    rotation_degrees: float = 30.0
    hflip: bool = True
    brightness: float = 0.2
    contrast: float = 0.2
    crop_scale_min: float = 0.8


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, precision and bookkeeping."""

    epochs: int = 10
    stop_after_epochs: int | None = None  # end this job early (time-boxed/preemptible machines); --resume continues
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 3e-4  # for a global batch of lr_base_batch; see lr_scaling
    lr_scaling: str = "none"  # "none", "linear" or "sqrt": how lr grows with the global batch (README)
    lr_base_batch: int = 32
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    max_grad_norm: float = 5.0
    part_loss_weight: float = 1.0
    anomaly_loss_weight: float = 1.0
    # "auto" (by hardware: hardware.resolve_mixed_precision), "no", "bf16" or "fp16"; null keeps what
    # `accelerate launch` chose
    mixed_precision: str | None = "auto"
    channels_last: bool = True
    num_workers: int = 2  # DataLoader workers per process; they only slice the image cache
    compile: bool = False  # torch.compile the model (worth it on GPUs for long runs)
    eval_every: int = 1  # evaluate (and save resumable state) every N epochs, and after the last
    seed: int = 0
    calibrate: bool = True  # fit per-part Platt scaling and thresholds on the val split
    ood_false_alarm_rate: float = 0.02  # share of val images the "unlike the training images" warning may flag
    ood_bank_size: int = 4096  # val images kept for the k-NN distance; serving reads them all per call
    log_with: str | None = None  # an Accelerate tracker name ("tensorboard", "wandb", ...) or none
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class Config:
    """A whole run."""

    output_dir: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a YAML config and apply ``key.sub=value`` overrides.

    Args:
        path: YAML file; ``None`` starts from the defaults.
        overrides: dotted assignments such as ``train.lr=3e-4`` or ``data.root=/data``.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        _set_dotted(raw, key.strip(), _override_value(value))
    return _build(Config, raw, prefix="")


_WORD_BOOLEANS = {"yes": True, "on": True, "no": False, "off": False}


def _override_value(text: str) -> Any:
    """A value given on the command line, read as YAML 1.2 reads it: only true and false are booleans. YAML 1.1
    (PyYAML) also reads yes, no, on and off as booleans, which turned ``train.mixed_precision=no`` (Accelerate's own
    word, and what ``auto`` resolves to on a CPU without bf16) into False."""
    if not text.strip():
        return None
    value = yaml.safe_load(text)
    if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
        return text.strip()
    return value


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """A plain, JSON- and YAML-ready dict of the config."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (the run folder keeps what actually ran)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
    node[leaf] = value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)}; known: {sorted(known)}")
    kwargs = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a simple type hint, accepting ints for floats and '3e-4'-style strings."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ConfigError(f"{key} may not be empty")
    for typ in allowed:
        if typ is bool and isinstance(value, bool):
            return value
        if typ is bool and isinstance(value, str) and value.lower() in _WORD_BOOLEANS:
            return _WORD_BOOLEANS[value.lower()]  # a bare yes/no/on/off from the command line, for a boolean key
        if typ is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if typ is float and isinstance(value, str):
            try:  # YAML 1.1 reads "3e-4" as a string
                return float(value)
            except ValueError:
                pass
        if typ is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
    hint = " (YAML reads a bare yes/no/on/off as a boolean: quote it)" if isinstance(value, bool) else ""
    raise ConfigError(f"{key}: expected {names}, got {value!r}{hint}")
