"""What this machine offers the model: the cores the process may really use, the CPU's name and the instruction
sets that decide precision and runtime. Read from the operating system, never from a timing. No models here.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from pathlib import Path

# Flags that change what is fast: bf16 is only worth it where the CPU computes it natively; VNNI speeds int8.
NOTABLE_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (containers, Spaces),
    shared among the processes of one launch on this machine (``LOCAL_WORLD_SIZE``). Never the host's count."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, cores // local_processes)


def _cgroup_cpu_quota() -> float | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max``, else v1 ``cfs_quota_us``), or None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux); empty elsewhere."""
    if not sys.platform.startswith("linux"):
        return frozenset()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matrix products in hardware. Without them bf16 is emulated and slower than fp32
    (4x on an AVX2 EPYC, measured), so nothing here picks it."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_int8_kind() -> str | None:
    """The instructions ONNX Runtime's int8 kernels use here: "AVX-512 VNNI", "AVX-VNNI" or "AVX2" (u8 x s8 products
    without VNNI; the int8 graph is made with 7-bit weights so they cannot saturate), else None (int8 not picked)."""
    flags = cpu_flags()
    for flag, kind in (("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"), ("avx2", "AVX2")):
        if flag in flags:
            return kind
    return None


def describe_cpu() -> str:
    """One line for logs and benchmark reports: name, notable flags, usable cores."""
    flags = [flag for flag in NOTABLE_FLAGS if flag in cpu_flags()]
    return f"{cpu_name()} ({', '.join(flags) or 'no AVX2'}; {usable_cores()} usable cores)"


MIXED_PRECISIONS = ("auto", "no", "bf16", "fp16")


def resolve_mixed_precision(requested: str | None, use_cpu: bool = False) -> tuple[str | None, str]:
    """Training precision for Accelerate, and why. "auto": bf16 where the device computes it natively (CUDA cards
    with bf16, CPUs with AVX512-BF16 or AMX), fp16 with the loss scaler on CUDA cards without bf16 (T4, V100), fp32
    ("no") on other CPUs, where emulated bf16 is several times slower (one step of 32 images at 224 px: 55 s on an
    AVX2 EPYC). An explicit value wins; None keeps what ``accelerate launch`` chose."""
    if requested is None or requested != "auto":
        if requested is not None and requested not in MIXED_PRECISIONS:
            raise ValueError(f"train.mixed_precision must be one of {MIXED_PRECISIONS} or null, got {requested!r}")
        return requested, "as configured" if requested else "as accelerate launch chose"
    import torch

    if torch.cuda.is_available() and not use_cpu:
        if torch.cuda.is_bf16_supported():
            return "bf16", f"auto: {torch.cuda.get_device_name()} computes bf16"
        return "fp16", f"auto: {torch.cuda.get_device_name()} has no bf16, fp16 with the loss scaler"
    if cpu_has_native_bf16():
        return "bf16", "auto: the CPU has native bf16"
    return "no", "auto: the CPU has no native bf16 (it would be emulated, slower than fp32)"
