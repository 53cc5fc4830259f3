"""Model runners: what executes the network for the Predictor, chosen once when it loads.

- ``TorchRunner``: eager PyTorch on any device, fp32 or bf16 autocast (channels-last).
- ``OnnxRunner``: ONNX Runtime on the CPU, from a graph exported from the checkpoint's own weights (cached on
  disk, keyed by their sha256: ``onnx_graph.py``), or the checkpoint's int8 graph (``quantize.py``).

Every runner answers a batch with a ``Forward``: both heads' logits, the pooled features and the early-stage
statistics of the out-of-distribution score, and the CAM layer's feature map. That is everything the Predictor
needs, Grad-CAM included (``explain.cam_from_forward``). Architectures whose heads do not sit on average-pooled
features get Captum's Grad-CAM through ``gradcam_captum`` (PyTorch, a backward pass). Knows nothing about files
other than its own graphs, nor about Gradio or DICOM.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from mura_mt.hardware import cpu_has_native_bf16, cpu_int8_kind, describe_cpu, usable_cores
from mura_mt.inference.checkpoint import file_sha256
from mura_mt.inference.explain import PartDecision, gradcam_with_output, pooled_by_average
from mura_mt.inference.onnx_graph import INT8_FILE, OUTPUT_NAMES, TappedNet, cached_graph
from mura_mt.inference.serving import resolve_precision
from mura_mt.model import ModelOutput, MultiTaskNet

logger = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")
RUNTIME_ENV = "MURA_MT_RUNTIME"


class RuntimeChoiceError(ValueError):
    """A runtime that cannot run here or on this checkpoint, with the reason."""


class Forward(NamedTuple):
    """One batch through the network, float32, on the runner's device."""

    output: ModelOutput
    pooled: torch.Tensor  # [B, F]
    style: torch.Tensor  # [B, D]
    feature_map: torch.Tensor  # [B, C, h, w]: the CAM layer's output


def _as_forward(outputs) -> Forward:
    part, anomaly, pooled, style, feature_map = (t.float() for t in outputs)
    return Forward(ModelOutput(part, anomaly), pooled, style, feature_map)


class TorchRunner:
    """Eager PyTorch. Owns the model it is given: moves it to ``device``, eval mode, frozen weights (Grad-CAM
    through Captum needs gradients only up to the CAM layer)."""

    name = "torch"
    why = "given"  # why this runner serves (``make_runner`` says)
    batch_size = 32  # images per forward in bulk work: bf16 at 16-32 is 1.7x batch 1 per image (docs/benchmarks.md)

    def __init__(self, model: MultiTaskNet, device: str | torch.device = "cpu", precision: str = "fp32"):
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.memory_format = torch.channels_last if self.precision == "bf16" else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format).eval().requires_grad_(False)
        self.net = TappedNet(self.model)
        self.threads = usable_cores() if self.device.type == "cpu" else None
        # Grad-CAM from the forward where the heads sit on average-pooled features (checked on this model).
        self.cam_from_forward = pooled_by_average(self.model)

    @property
    def anomaly_head_weight(self) -> torch.Tensor:
        return self.model.anomaly_head.weight

    def single_threaded(self, copies: int) -> None:
        """PyTorch's threads are the process's: no copies that could run side by side (bulk keeps one model)."""
        return None

    def __call__(self, x: torch.Tensor) -> Forward:
        _torch_threads(self.threads)
        with torch.inference_mode(), self.autocast():
            return _as_forward(self.net(self._place(x)))

    def gradcam_captum(self, x: torch.Tensor, decide_part: PartDecision) -> tuple[torch.Tensor, Forward]:
        """Captum's LayerGradCam (forward + backward), for architectures where ``cam_from_forward`` does not hold."""
        _torch_threads(self.threads)
        maps: list[torch.Tensor] = []
        handle = self.model.cam_layer.register_forward_hook(lambda m, i, output: maps.append(output.detach()))
        try:
            with self.autocast(), self.net.stages as stages:
                cams, out, _, pooled = gradcam_with_output(self.model, self._place(x), decide_part)
        finally:
            handle.remove()
        return cams, _as_forward((*out, pooled, stages.features(), maps[-1]))

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _place(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device).contiguous(memory_format=self.memory_format)


class OnnxRunner:
    """ONNX Runtime on the CPU, fp32 or int8, with the threads this process may really use. Captum's path, for
    the rare architecture that needs it, runs the PyTorch model in fp32.

    ``model`` may be a function that builds it: the int8 graph needs only the anomaly head's weights and the
    premise of Grad-CAM from the forward (both recorded at export), so a server builds the PyTorch network (and
    imports timm, torchvision and torch._dynamo: 1.3 s of a 7 s cold start) only if something asks for it."""

    def __init__(
        self,
        graph: Path,
        model: MultiTaskNet | Callable[[], MultiTaskNet],
        name: str = "onnx",
        anomaly_head_weight: torch.Tensor | None = None,
        cam_from_forward: bool | None = None,
        threads: int | None = None,
    ):
        import onnxruntime as ort

        self.name = name
        self.why = "given"
        # Images per forward in bulk work: ONNX Runtime's per-image time is flat from batch 4 up (5.6-5.9 ms int8 at
        # 224 px on 2 cores) and small batches keep the decoding threads' next batch ready sooner.
        self.batch_size = 8
        self.device = torch.device("cpu")
        self.precision = "int8" if name == "onnx-int8" else "fp32"
        self.graph = Path(graph)
        self.threads = threads or usable_cores()
        options = ort.SessionOptions()
        # One call at a time (the Predictor's lock) on all usable cores; requests never oversubscribe them.
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle threads sleep instead of spinning: spinning workers kept both cores busy after each call and slowed the
        # PyTorch work that follows it (measured: predict 36-44 -> 24-25 ms on 2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self._build, self._model = (None, _frozen(model)) if isinstance(model, nn.Module) else (model, None)
        self._lock = threading.Lock()
        self._torch: TorchRunner | None = None
        self._head = anomaly_head_weight
        self._premise = cam_from_forward
        self._copies: list[OnnxRunner] = []

    @property
    def model(self) -> MultiTaskNet:
        """The PyTorch network in fp32 on the CPU, built when first asked for."""
        with self._lock:
            if self._model is None:
                self._model = _frozen(self._build())
            return self._model

    @property
    def anomaly_head_weight(self) -> torch.Tensor:
        return self._head if self._head is not None else self.model.anomaly_head.weight

    @property
    def cam_from_forward(self) -> bool:
        if self._premise is None:
            self._premise = pooled_by_average(self.model)
        return self._premise

    def single_threaded(self, copies: int) -> list[OnnxRunner]:
        """``copies`` sessions of this graph on one thread each, for bulk work: each worker thread decodes its own
        batch and runs it on its own session, so no session waits on a core a decoder holds (2 cores, PNG and DICOM:
        1.39x -> 1.68x file-by-file calls; ``mura_mt.bench.bulk``)."""
        with self._lock:  # made once per count: a session costs about 0.1 s
            if len(self._copies) < copies:
                model = self._model if self._model is not None else self._build
                self._copies += [
                    OnnxRunner(self.graph, model, self.name, self._head, self._premise, threads=1)
                    for _ in range(copies - len(self._copies))
                ]
            return self._copies[:copies]

    def __call__(self, x: torch.Tensor) -> Forward:
        # The small tensor work around the call (softmax, the warning score, the Grad-CAM sum) runs in PyTorch on one
        # thread: PyTorch's OpenMP workers would otherwise spin beside ONNX Runtime's threads on the same cores
        # (measured: predict 24.4 -> 20.7 ms for an 18 ms session call on 2 cores).
        _torch_threads(1)
        outputs = self.session.run(list(OUTPUT_NAMES), {"x": x.detach().cpu().float().contiguous().numpy()})
        return _as_forward(torch.from_numpy(np.asarray(o)) for o in outputs)

    def gradcam_captum(self, x: torch.Tensor, decide_part: PartDecision) -> tuple[torch.Tensor, Forward]:
        model = self.model
        with self._lock:
            if self._torch is None:
                self._torch = TorchRunner(model, "cpu", "fp32")
        return self._torch.gradcam_captum(x, decide_part)


ModelRunner = TorchRunner | OnnxRunner


def _frozen(model: MultiTaskNet) -> MultiTaskNet:
    return model.cpu().float().eval().requires_grad_(False)


def _torch_threads(threads: int | None) -> None:
    """PyTorch's intra-op threads for the coming call (process-wide; calls run one at a time under the Predictor's
    lock): the usable cores (affinity and cgroup quota, not the host's count) for PyTorch's own forward."""
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


class RuntimeChoice(NamedTuple):
    name: str  # one of RUNTIMES but auto
    why: str  # one line for the log and the app's start-up message


def resolve_runtime(
    runtime: str | None, device: torch.device, precision: str = "auto", int8_problem: str | None = "no int8 graph"
) -> RuntimeChoice:
    """``auto`` -> the fastest runtime that keeps the answers, measured for this hardware (docs/benchmarks.md):

    - PyTorch on CUDA (ZeroGPU included), and whenever bf16 is asked for;
    - with precision auto, on a CPU with AVX-512 VNNI, AVX-VNNI or AVX2: the checkpoint's int8 graph when its
      accuracy gate passed (``int8_problem`` None; 0.42x PyTorch fp32's time with Grad-CAM at batch 1 on a VNNI CPU);
    - otherwise PyTorch bf16 on CPUs that compute bf16 natively, ONNX Runtime fp32 on the others (and whenever fp32
      is asked for); the choice says why int8 was not taken.

    An explicit choice that cannot run here is an error that says why."""
    runtime = runtime or os.environ.get(RUNTIME_ENV) or "auto"
    if runtime not in RUNTIMES:
        raise RuntimeChoiceError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime != "auto":
        if runtime.startswith("onnx"):
            if device.type != "cpu":
                raise RuntimeChoiceError(f"runtime {runtime} runs on the CPU only; use --runtime torch on {device}")
            if precision == "bf16":
                raise RuntimeChoiceError(f"runtime {runtime} has no bf16; use --runtime torch for bf16")
            if not onnxruntime_available():
                raise RuntimeChoiceError(f"runtime {runtime} needs onnxruntime: pip install onnxruntime")
        return RuntimeChoice(runtime, "asked for")
    if device.type != "cpu":
        return RuntimeChoice("torch", f"PyTorch on {device.type}")
    if precision == "bf16":
        return RuntimeChoice("torch", "bf16 asked for: PyTorch's")
    if not onnxruntime_available():
        return RuntimeChoice("torch", "onnxruntime is not installed")
    if precision == "fp32":
        return RuntimeChoice("onnx", "fp32 asked for: ONNX Runtime fp32")
    kind = cpu_int8_kind()
    if int8_problem is None and kind:
        return RuntimeChoice("onnx-int8", f"the int8 graph passed its accuracy gate; {kind} CPU")
    why_not = f"not int8 ({int8_problem or 'this CPU has neither VNNI nor AVX2'})"
    if cpu_has_native_bf16():
        return RuntimeChoice("torch", f"{why_not}: PyTorch bf16 on a CPU with native bf16")
    return RuntimeChoice("onnx", f"{why_not}: ONNX Runtime fp32")


def make_runner(
    model: MultiTaskNet | Callable[[], MultiTaskNet],
    config: dict,
    directory: Path,
    runtime: str | None = "auto",
    device: str | torch.device = "cpu",
    precision: str = "auto",
    anomaly_head_weight: torch.Tensor | None = None,
) -> ModelRunner:
    """The runner for a checkpoint (folder ``directory``, its ``config``), logged with what was chosen and why.
    ``model``: the network, or a function that builds it (the int8 graph may never need it; then give the anomaly
    head's weights too)."""
    device = torch.device(device)
    runtime = runtime or os.environ.get(RUNTIME_ENV) or "auto"
    int8_graph, int8_problem = None, "not asked for"
    if runtime in ("auto", "onnx-int8"):  # hashing the graph and its statistics only where int8 may serve
        try:
            int8_graph, int8_problem = verified_int8_graph(directory, config), None
        except RuntimeChoiceError as err:
            int8_problem = str(err)
    chosen = resolve_runtime(runtime, device, precision, int8_problem)
    if chosen.name == "onnx-int8":
        if int8_graph is None:
            raise RuntimeChoiceError(int8_problem)
        premise = config["onnx_int8"].get("cam_from_forward")  # recorded at export; else checked on the model
        runner: ModelRunner = OnnxRunner(int8_graph, model, "onnx-int8", anomaly_head_weight, premise)
    else:
        model = model if isinstance(model, nn.Module) else model()
        if chosen.name == "torch":
            runner = TorchRunner(model, device, precision)
        else:
            image_size = int(config["preprocessing"]["image_size"])
            runner = OnnxRunner(cached_graph(model, config["weights_sha256"], image_size), model)
    runner.why = chosen.why
    logger.info(
        f"mura-mt runtime {runner.name} ({chosen.why}), precision {runner.precision}, device {runner.device}, "
        f"threads {runner.threads}, CPU {describe_cpu()}"
    )
    return runner


def verified_int8_graph(directory: Path, config: dict) -> Path:
    """The checkpoint's int8 graph, only if config.json records it for THESE weights, the graph and its warning
    statistics are the files that were checked, and its accuracy gate passed."""
    record = config.get("onnx_int8")
    if not record:
        raise RuntimeChoiceError(
            f"{directory} has no int8 model; make one with "
            f"python scripts/export_onnx.py --checkpoint {directory} --data-root ROOT --int8"
        )
    graph = Path(directory) / record.get("file", INT8_FILE)
    if record.get("weights_sha256") != config.get("weights_sha256"):
        raise RuntimeChoiceError(f"{graph} was made from other weights; export it again")
    if not graph.is_file() or file_sha256(graph) != record.get("sha256"):
        raise RuntimeChoiceError(f"{graph} is missing or does not match the sha256 in config.json; export it again")
    ood = record.get("ood")
    if not ood:
        raise RuntimeChoiceError(f"{graph} has no warning statistics fitted on its own features; export it again")
    ood_file = Path(directory) / ood["file"]
    if not ood_file.is_file() or file_sha256(ood_file) != ood.get("sha256"):
        raise RuntimeChoiceError(f"{ood_file} is missing or does not match the sha256 in config.json; export again")
    accuracy = record.get("accuracy", {})
    if not accuracy.get("passed"):
        raise RuntimeChoiceError(
            f"{graph} failed its accuracy gate ({'; '.join(accuracy.get('failures', [])) or 'no gate recorded'})"
        )
    return graph


def runtime_file(directory: Path, config: dict, runtime: str, what: str) -> Path | None:
    """The file ``what`` ("ood": the warning's statistics, "drift_reference") fitted on ``runtime``'s own outputs,
    where the checkpoint ships one for it (the int8 graph does: its features are not fp32's); None: use the
    checkpoint's own (fitted in fp32, which PyTorch bf16 and ONNX Runtime fp32 also serve)."""
    if runtime != "onnx-int8":
        return None
    entry = config.get("onnx_int8", {}).get(what)
    return Path(directory) / entry["file"] if entry else None
