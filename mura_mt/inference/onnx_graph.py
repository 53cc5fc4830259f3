"""The ONNX graph of a checkpoint: ``TappedNet`` (the network with the taps every runner answers with), its export to
ONNX (fp32, dynamic batch, atomic) and the on-disk cache keyed by the weights' sha256, the input size, the graph
version and the exporter. The int8 graph is made from this one by ``quantize.py``; runners.py chooses and runs them.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import threading
from pathlib import Path

import torch
from torch import nn

from mura_mt.inference.ood import StageStatistics
from mura_mt.scratch import process_folder
from mura_mt.model import MultiTaskNet

logger = logging.getLogger(__name__)

ONNX_CACHE_ENV = "MURA_MT_ONNX_CACHE"
OUTPUT_NAMES = ("part_logits", "anomaly_logits", "pooled", "style", "feature_map")
# Bump when the graph's inputs, outputs or what they mean change: cached graphs of another version are rebuilt.
GRAPH_VERSION = "1"
OPSET = 17
INT8_FILE = "model.int8.onnx"
# Fitted on the int8 graph's own outputs at export (scripts/export_onnx.py --int8), beside it in the checkpoint.
INT8_OOD_FILE = "ood.int8.safetensors"
INT8_REFERENCE_FILE = "drift_reference.onnx-int8.json"


class TappedNet(nn.Module):
    """The network with its taps as outputs, in ``OUTPUT_NAMES`` order: what the ONNX graph computes and what the
    PyTorch runner calls, so both runtimes answer with the same definitions."""

    def __init__(self, model: MultiTaskNet):
        super().__init__()
        self.model = model
        self.stages = StageStatistics(model.backbone)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        maps: list[torch.Tensor] = []
        handle = self.model.cam_layer.register_forward_hook(lambda module, inputs, output: maps.append(output))
        try:
            with self.stages as stages:
                pooled = self.model.backbone(x)
        finally:
            handle.remove()
        out = self.model.heads(pooled)
        return out.part_logits, out.anomaly_logits, pooled, stages.features(), maps[-1]


def onnx_cache_dir() -> Path:
    """``$MURA_MT_ONNX_CACHE``, else ``$XDG_CACHE_HOME/mura_mt/onnx``, else ``~/.cache/mura_mt/onnx``."""
    if os.environ.get(ONNX_CACHE_ENV):
        return Path(os.environ[ONNX_CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mura_mt" / "onnx"


def graph_key(weights_sha256: str, image_size: int) -> str:
    """What a cached graph must have been built from: these weights, this input size, this graph version and
    this exporter."""
    return f"{weights_sha256}-{image_size}-v{GRAPH_VERSION}-torch{torch.__version__}"


def cached_graph(model: MultiTaskNet, weights_sha256: str, image_size: int, cache_dir: Path | None = None) -> Path:
    """The fp32 ONNX graph of these weights: the cached one if its recorded key matches, else exported anew."""
    key = graph_key(weights_sha256, image_size)
    folder = cache_dir or onnx_cache_dir()
    path = folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.onnx"
    if path.is_file() and graph_metadata(path).get("mura_mt.key") == key:
        return path
    if path.exists():
        logger.warning(f"{path} does not carry the key of these weights; exporting the graph again")
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return export_graph(model, path, image_size, {"mura_mt.key": key, "mura_mt.weights_sha256": weights_sha256})
    except OSError as err:  # a read-only cache (a locked-down host): a private temporary graph still serves
        logger.warning(f"cannot write the ONNX cache {folder} ({err}); using a temporary folder")
        temporary = process_folder("onnx") / path.name  # deleted with the process
        return export_graph(
            model, temporary, image_size, {"mura_mt.key": key, "mura_mt.weights_sha256": weights_sha256}
        )


def export_graph(model: MultiTaskNet, path: Path, image_size: int, metadata: dict[str, str]) -> Path:
    """Export ``TappedNet(model)`` in fp32 with a dynamic batch axis to ``path``, atomically, with ``metadata``."""
    import onnx

    cpu_model = copy.deepcopy(model).cpu().float().eval().to(memory_format=torch.contiguous_format)
    net = TappedNet(cpu_model)
    dummy = torch.zeros(1, 3, image_size, image_size)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with torch.inference_mode(False), torch.no_grad(), _quiet_exporter():
            torch.onnx.export(
                net,
                (dummy,),
                str(tmp),
                dynamo=False,  # the TorchScript exporter: no onnxscript, and a plain graph that quantises well
                input_names=["x"],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes={"x": {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}},
                opset_version=OPSET,
            )
        graph = onnx.load(str(tmp))
        for key, value in metadata.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.save(graph, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def _quiet_exporter():
    """The TorchScript exporter warns that it is deprecated (in favour of one that needs onnxscript); that is known."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def graph_metadata(path: Path) -> dict[str, str]:
    """The metadata_props of an ONNX file (empty when it cannot be read)."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception:  # a damaged or foreign file is simply not trusted
        return {}
    return {prop.key: prop.value for prop in graph.metadata_props}
