"""The Gradio app: web UI, `gradio_client` API (/predict, /predict_study), MCP tools and a Hugging Face Space.

`build_demo(predictor)` holds layout and callbacks only: files go to the Predictor as paths (decoded by the
project's own loader, never by gr.Image), and its Prediction is mapped to widgets. The app never touches
tensors. Run: python app.py [--checkpoint CKPT] [--host H] [--port P] [--precision auto|fp32|bf16]
[--runtime auto|torch|onnx|onnx-int8] [--device auto|cpu|cuda] [--auth-file FILE] [--time-limit S] [--no-mcp]
[--worklist-db FILE_OR_URL [--dicom-port PORT --dicom-ae-title AET --store-dir DIR --return-to AET@HOST:PORT ...]];
env MURA_MT_CHECKPOINT does the same as --checkpoint, MURA_MT_RUNTIME as --runtime, and
MURA_MT_AUTH="user:password[,user2:password2]" (a Spaces secret) turns on the login for page and API alike. The
two endpoints are also MCP tools (``predict``, ``predict_study``) at /gradio_api/mcp/; on a ZeroGPU Space each
analysis runs inside ``@spaces.GPU``. With ``--worklist-db`` (env MURA_MT_WORKLIST_DB) the page opens on the triage
worklist (``mura_mt.worklist_tab``) and the API has ``/worklist``; with ``--dicom-port`` too, this process is also a
DICOM node (``mura_mt.dicom_node``) on the same Predictor. Off loopback the worklist needs a login.

Several requests run at once (``concurrency``, default twice the cores): decoding, overlay
drawing and PNG encoding of one request overlap with another's model call; the Predictor serialises only the
model call itself. The queue stays bounded (16 waiting); beyond that Gradio refuses at once. An analysis that
takes longer than ``time_limit`` seconds answers with a clean error and frees its worker.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import hmac
import logging
import os
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

try:  # Hugging Face ZeroGPU: `spaces` must come before anything initialises CUDA; absent elsewhere
    import spaces
except ImportError:
    spaces = None
import gradio as gr

from mura_mt.dicom_node.node import DicomNode, NodeOptions, add_node_options
from mura_mt.dicom_node.outputs import ModelIdentity
from mura_mt.dicom_node.store import WorklistStore
from mura_mt.explain import overlay
from mura_mt.io import InvalidImageError, load_radiograph
from mura_mt.labels import BODY_PARTS
from mura_mt.predictor import Predictor, StudyPrediction

HERE = Path(__file__).resolve().parent
DEMO_CHECKPOINT = HERE / "checkpoints" / "demo"
FILE_TYPES = [".png", ".jpg", ".jpeg", ".dcm"]
MAX_VIEWS = 12
QUEUE_SIZE = 16
DEFAULT_TIME_LIMIT_S = 60.0
DEFAULT_CONCURRENCY = 2 * (os.cpu_count() or 1)  # measured on 2 cores: 4 beat 2 and 8 (docs/benchmarks.md)
DISCLAIMER = (
    "**Research demo: not a medical device, not for diagnosis.** The bundled weights were trained on "
    "*synthetic* radiographs; real weights come from training on MURA."
)
HOW_TO_READ = """**How to read this.** The body-part model names the part it sees; that part's abnormality
head gives the probability, compared with the part's threshold (fitted on validation data). *Decided by* says whether
the predicted part or the part you chose picked the head. The Grad-CAM overlay shows where that head found its
evidence: warm colours push towards *abnormal*. A study's probability is the mean over its views. Warnings stand
above the verdict: an image unlike the training images (another body region, a CT or MR slice, a photo, or for the
bundled demo any real radiograph) gets an answer that is not reliable; an uncertain body part means you should
choose the part yourself."""


def build_demo(
    predictor: Predictor,
    examples: list[str] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    time_limit: float = DEFAULT_TIME_LIMIT_S,
    cache_examples: bool = True,
    worklist=None,
) -> gr.Blocks:
    """The whole UI and API around one Predictor; ``concurrency`` requests of each route run at once, and an
    analysis longer than ``time_limit`` seconds is answered with an error. ``examples`` are answered at launch
    (``cache_examples``) so that clicking one shows its result at once. With a ``worklist`` store the page has two
    tabs, the upload and the worklist (``mura_mt.worklist_tab``), and the API has ``/worklist``."""

    pictures = _PictureFiles()
    # The analyses run here, so a request can stop waiting for one that is too slow; the thread finishes it in
    # the background (Python cannot stop it), and the Predictor's lock makes later requests wait their turn.
    analyses = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="analysis")
    analyse = on_gpu(
        lambda images, body_part, explain: predictor.predict_study(images, body_part, explain=explain), time_limit
    )

    def _guarded(images, body_part: str, explain: bool):
        # The request's context goes along: ZeroGPU reads the Gradio request from it to schedule a GPU.
        future = analyses.submit(contextvars.copy_context().run, analyse, images, body_part, explain)
        try:
            return future.result(timeout=time_limit)
        except FutureTimeout:
            raise gr.Error(
                f"The analysis took longer than {time_limit:g} s and was stopped; please try again later."
            ) from None
        except (InvalidImageError, ValueError) as err:
            raise gr.Error(str(err)) from None

    def predict_study(files, body_part: str, explain: bool) -> tuple[dict, list, str, dict]:
        """Screen ONE radiograph study (several views of one body part of one patient) for musculoskeletal
        abnormality with a model trained on MURA-style upper-extremity radiographs (elbow, finger, forearm, hand,
        humerus, shoulder, wrist). A research tool, not a diagnosis: never present its answer as a medical
        finding. Read `warnings` first: "looks unlike the images this model was trained on" means the answer is
        not reliable (another body region, a CT, MR or photo, or any real radiograph for the synthetic demo).

        Args:
            files: one to 12 radiographs of the same study (PNG, JPEG or DICOM files).
            body_part: "auto" (the model names the part) or one of elbow, finger, forearm, hand, humerus, shoulder,
                wrist to make that part's head decide.
            explain: whether to compute a Grad-CAM overlay for every view (slower).

        Returns:
            study_result: body_part, part_probs, gated_by, abnormal_prob, threshold, is_abnormal, warnings,
                unlike_training (above 1: unlike the training images) and the same for each view.
            views_and_gradcam_overlays: each view, then its overlay when explain is on.
            verdict: the verdict in words, warnings first.
            body_part_probabilities: the study's body-part probabilities.
        """
        paths = _paths(files)
        images = [_load(path) for path in paths]
        result = _guarded(images, body_part, explain)
        gallery = []
        for path, image, view in zip(paths, images, result.views):
            name = Path(path).name
            gallery.append((pictures.write(image), f"{name}: original"))
            if view.heatmap is not None:
                shown = overlay(image, view.heatmap)
                gallery.append((pictures.write(shown), f"{name}: Grad-CAM, p={view.abnormal_prob:.2f}"))
        return result.to_dict(), gallery, _verdict(result), result.part_probs

    def predict(file, body_part: str, explain: bool):
        """Screen ONE upper-extremity radiograph for musculoskeletal abnormality with a model trained on
        MURA-style radiographs (elbow, finger, forearm, hand, humerus, shoulder, wrist). A research tool, not a
        diagnosis: never present its answer as a medical finding. Read `warnings` first: "looks unlike the images
        this model was trained on" means the answer is not reliable.

        Args:
            file: a radiograph (PNG, JPEG or DICOM file).
            body_part: "auto" (the model names the part) or one of elbow, finger, forearm, hand, humerus, shoulder,
                wrist to make that part's head decide.
            explain: whether to compute the Grad-CAM overlay (slower).

        Returns:
            result: body_part, part_probs, gated_by, abnormal_prob, threshold, is_abnormal, warnings and
                unlike_training (above 1: unlike the training images).
            overlay: the Grad-CAM overlay as a PNG (the image itself when explain is off).
        """
        image = _load(_paths(file)[0])
        result = _guarded([image], body_part, explain).views[0]
        return result.to_dict(), pictures.write(overlay(image, result.heatmap) if result.heatmap is not None else image)

    with gr.Blocks(title="mura-mt: bone X-ray triage", analytics_enabled=False, delete_cache=(900, 900)) as demo:
        gr.Markdown("# mura-mt: bone X-ray triage with explanations")
        gr.Markdown(DISCLAIMER)
        # The outputs exist before the examples (which need them to cache their answers) but show on the right.
        verdict = gr.Markdown(label="verdict", elem_id="verdict", render=False)
        part_probs = gr.Label(num_top_classes=3, label="Body part", elem_id="part-probs", render=False)
        gallery = gr.Gallery(
            label="Views and Grad-CAM overlays",
            columns=2,
            height="auto",
            format="png",
            elem_id="overlays",
            render=False,
        )
        details = gr.JSON(label="study result", elem_id="details", render=False)
        # Without a worklist the page is one view, as it always was; with one, the page opens on the worklist and
        # the upload is the first tab.
        with gr.Tabs(selected="worklist") if worklist is not None else contextlib.nullcontext():
            with gr.Tab("Analyse images", id="upload") if worklist is not None else contextlib.nullcontext():
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1, min_width=280):
                        files = gr.File(
                            label="Radiographs of one study (PNG, JPEG or DICOM)",
                            file_count="multiple",
                            file_types=FILE_TYPES,
                            type="filepath",
                            elem_id="upload",
                        )
                        part = gr.Dropdown(
                            ["auto", *BODY_PARTS],
                            value="auto",
                            label="Body part",
                            elem_id="body-part",
                            info="auto: the body-part head decides which anomaly head answers",
                        )
                        explain = gr.Checkbox(value=True, label="Show Grad-CAM explanation", elem_id="explain")
                        run = gr.Button("Analyze", variant="primary", elem_id="analyze")
                        if examples:
                            # Answered once at start-up, so a click on an example shows its result at once.
                            gr.Examples(
                                [[[path], "auto", True] for path in examples],
                                [files, part, explain],
                                [details, gallery, verdict, part_probs],
                                fn=predict_study,
                                cache_examples=cache_examples,
                                # ZeroGPU attaches a GPU to requests only, so there the first click fills the cache.
                                cache_mode="lazy" if _on_zero_gpu() else "eager",
                                label="Examples (synthetic radiographs)",
                                api_visibility="private",
                                elem_id="examples",
                            )
                    with gr.Column(scale=2, min_width=320):
                        verdict.render()
                        part_probs.render()
                        gallery.render()
                        with gr.Accordion("Details (JSON)", open=False):
                            details.render()
                gr.Markdown(HOW_TO_READ)
            if worklist is not None:
                from mura_mt.worklist_tab import worklist_tab

                worklist_tab(demo, worklist, predictor)
        run.click(
            predict_study,
            [files, part, explain],
            [details, gallery, verdict, part_probs],
            api_name="predict_study",
            concurrency_limit=concurrency,
        )
        with gr.Column(visible=False):  # API-only endpoint for one image
            single_file = gr.File(type="filepath", file_types=FILE_TYPES)
            single_part = gr.Dropdown(["auto", *BODY_PARTS], value="auto")
            single_explain = gr.Checkbox(value=True)
            single_json = gr.JSON(label="result")
            single_image = gr.Image(label="overlay", format="png", type="filepath")
            gr.Button().click(
                predict,
                [single_file, single_part, single_explain],
                [single_json, single_image],
                api_name="predict",
                concurrency_limit=concurrency,
            )
    return demo


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

    return "cuda" if _on_zero_gpu() or torch.cuda.is_available() else "cpu"


def _on_zero_gpu() -> bool:
    return spaces is not None and os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


class _PictureFiles:
    """Output pictures as PNG files with unique names, encoded in the request's own thread.

    Gradio would write a returned PIL image to a content-addressed cache path in place, so two requests with the
    same picture could truncate the file while a client downloads it (seen as a broken download under
    concurrency). A file path is instead copied into the cache under a temporary name and renamed. Our files
    are removed after a few minutes, so the folder does not grow; the sweep runs at most once a minute, not per
    request (under load the folder holds thousands of files).
    """

    KEEP_S = 300
    SWEEP_EVERY_S = 60

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="mura-mt-pictures-"))
        self._next_sweep = time.monotonic() + self.SWEEP_EVERY_S
        self._sweep_lock = threading.Lock()

    def write(self, image) -> str:
        if time.monotonic() >= self._next_sweep and self._sweep_lock.acquire(blocking=False):
            try:  # one request sweeps; the others do not wait for it
                self._next_sweep = time.monotonic() + self.SWEEP_EVERY_S
                self._sweep()
            finally:
                self._sweep_lock.release()
        path = self.folder / f"{uuid.uuid4().hex}.png"
        image.save(path, format="PNG", compress_level=1)  # 2x faster to encode than the default; loopback-sized
        return str(path)

    def _sweep(self) -> None:
        now = time.time()
        for old in self.folder.glob("*.png"):
            try:
                if now - old.stat().st_mtime > self.KEEP_S:
                    old.unlink()
            except FileNotFoundError:  # removed meanwhile
                pass


def _paths(files) -> list[str]:
    if not files:
        raise gr.Error("Upload at least one radiograph (PNG, JPEG or DICOM).")
    items = files if isinstance(files, list) else [files]
    paths = [item if isinstance(item, str) else getattr(item, "path", None) or item["path"] for item in items]
    if len(paths) > MAX_VIEWS:
        raise gr.Error(f"A study has at most {MAX_VIEWS} views; {len(paths)} were uploaded.")
    return paths


def _load(path: str):
    try:
        return load_radiograph(path)
    except InvalidImageError as err:
        raise gr.Error(f"{Path(path).name}: {err}") from None


def _verdict(result: StudyPrediction) -> str:
    """Warnings first: one that says the answer is not reliable must be read before the answer."""
    label = "ABNORMAL" if result.is_abnormal else "NORMAL"
    decided = "the predicted body part" if result.gated_by == "predicted" else "the body part you chose"
    lines = [f"> ⚠️ **{warning}**" for warning in result.warnings]
    lines += [
        f"## {label}: abnormality probability {result.abnormal_prob:.2f} (threshold {result.threshold:.2f})",
        f"Decided by the **{result.body_part}** head, picked by {decided}; {len(result.views)} view(s).",
    ]
    return "\n\n".join(lines)


class AuthError(ValueError):
    """The login configuration is malformed (the message never contains a password)."""


def load_credentials(auth_file: str | None, env_value: str | None) -> dict[str, str] | None:
    """Users and passwords from ``--auth-file`` (one ``user:password`` a line; blank lines and ``#`` comments
    skipped) or else ``MURA_MT_AUTH`` (``user:password[,user2:password2]``); None when neither is set."""
    if auth_file:
        try:
            lines = Path(auth_file).read_text().splitlines()
        except OSError as err:
            raise AuthError(f"cannot read the auth file {auth_file}: {err.strerror}") from None
        entries = [(f"{auth_file} line {n}", line.strip()) for n, line in enumerate(lines, 1)]
        entries = [(where, line) for where, line in entries if line and not line.startswith("#")]
    elif env_value:
        entries = [(f"MURA_MT_AUTH entry {n}", item.strip()) for n, item in enumerate(env_value.split(","), 1)]
    else:
        return None
    credentials = {}
    for where, entry in entries:
        user, sep, password = entry.partition(":")
        if not sep or not user.strip() or not password:
            raise AuthError(f"{where} is not of the form user:password")  # never echo the entry: it may be a secret
        credentials[user.strip()] = password
    if not credentials:
        raise AuthError("login is configured but names no user")
    return credentials


def check_login(credentials: dict[str, str]):
    """Gradio's auth callback: constant-time comparison, so timing does not reveal how much of a guess was right."""

    def check(user: str, password: str) -> bool:
        expected = credentials.get(user)
        return expected is not None and hmac.compare_digest(expected.encode(), password.encode())

    return check


def is_loopback(host: str) -> bool:
    """Only this machine can reach a server on these addresses."""
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def resolve_checkpoint_arg(cli_value: str | None) -> str:
    return cli_value or os.environ.get("MURA_MT_CHECKPOINT") or str(DEMO_CHECKPOINT)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the mura-mt Gradio app.")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="folder or Hub repo id (default: env MURA_MT_CHECKPOINT, else the bundled demo checkpoint)",
    )
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument(
        "--precision",
        default=os.environ.get("MURA_MT_PRECISION", "auto"),
        choices=["auto", "fp32", "bf16"],
        help="auto: bf16 where the hardware has it natively (env MURA_MT_PRECISION)",
    )
    parser.add_argument(
        "--runtime",
        default=os.environ.get("MURA_MT_RUNTIME", "auto"),
        choices=["auto", "torch", "onnx", "onnx-int8"],
        help="auto: ONNX Runtime on the CPU, PyTorch on a GPU (env MURA_MT_RUNTIME)",
    )
    parser.add_argument(
        "--device",
        default=os.environ.get("MURA_MT_DEVICE", "auto"),
        choices=["auto", "cpu", "cuda"],
        help="auto: CUDA where there is a GPU (a ZeroGPU Space included), else the CPU (env MURA_MT_DEVICE)",
    )
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="requests run at once")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=float(os.environ.get("MURA_MT_TIME_LIMIT", DEFAULT_TIME_LIMIT_S)),
        help="seconds an analysis may take before the request gets an error (env MURA_MT_TIME_LIMIT)",
    )
    parser.add_argument("--auth-file", default=None, help="turn on login: one user:password a line")
    parser.add_argument("--no-mcp", action="store_true", help="do not serve /predict and /predict_study as MCP tools")
    site = parser.add_argument_group(
        "worklist and DICOM node",
        "--worklist-db alone shows the worklist of nodes that run elsewhere; with --dicom-port this process is also "
        "a node (scripts/dicom_node.py explains the node's options), sharing the app's model",
    )
    site.add_argument(
        "--worklist-db",
        default=os.environ.get("MURA_MT_WORKLIST_DB"),
        help="the worklist store: a SQLite file or a postgresql:// URL (env MURA_MT_WORKLIST_DB)",
    )
    site.add_argument("--dicom-port", type=int, default=None, help="run a DICOM node on this port")
    site.add_argument("--dicom-ae-title", default="MURAMT", help="the node's AE title (default MURAMT)")
    site.add_argument("--dicom-host", default="0.0.0.0", help="address the node listens on (default: all)")
    add_node_options(site)
    args = parser.parse_args(argv)
    try:
        credentials = load_credentials(args.auth_file, os.environ.get("MURA_MT_AUTH"))
    except AuthError as err:
        parser.error(str(err))
    if args.dicom_port is not None and not args.worklist_db:
        parser.error("--dicom-port needs --worklist-db: the node's memory and the worklist the app shows")
    if args.worklist_db and not credentials and not is_loopback(args.host):
        parser.error(
            f"the worklist shows patients' names and ids, so on --host {args.host} it needs a login: set "
            "MURA_MT_AUTH=user:password or --auth-file FILE (or serve on 127.0.0.1)"
        )
    node_options = None
    if args.dicom_port is not None:
        try:
            node_options = NodeOptions.from_args(
                args, args.dicom_ae_title, args.dicom_port, args.dicom_host, args.worklist_db
            )
        except ValueError as err:
            parser.error(str(err))
    checkpoint = resolve_checkpoint_arg(args.checkpoint)
    # Gradio's MCP route does not go through the login, so a protected app must not open it.
    serve_mcp = not args.no_mcp and not credentials
    if credentials and not args.no_mcp:
        print("mura-mt: the MCP tools are off because a login is configured (the MCP route has no login).")
    # The start-up line says which runtime, precision, threads and CPU features were chosen (mura_mt.runtime).
    library_log = logging.getLogger("mura_mt")
    library_log.setLevel(logging.INFO)
    library_log.addHandler(logging.StreamHandler())
    precision = args.precision
    if precision == "auto" and _on_zero_gpu():
        # ZeroGPU's cards (H200 slices) compute bf16 natively, and CUDA cannot be queried outside @spaces.GPU.
        precision = "bf16"
    predictor = Predictor.from_pretrained(
        checkpoint, device=resolve_device(args.device), precision=precision, runtime=args.runtime
    )
    examples = sorted(str(p) for p in (HERE / "examples").glob("*.png"))
    # Gradio keys its example cache by component id, not by model: a fresh folder per launch, so answers cached
    # for one checkpoint are never shown for another.
    os.environ.setdefault("GRADIO_EXAMPLES_CACHE", tempfile.mkdtemp(prefix="mura-mt-examples-"))
    store = node = None
    if args.worklist_db:
        try:
            store = WorklistStore(args.worklist_db, node=args.dicom_ae_title)
        except (ConnectionError, RuntimeError) as err:
            parser.error(str(err))
    if node_options is not None:
        node = DicomNode(node_options, store, predictor, ModelIdentity.of(checkpoint, args.dicom_ae_title))
        node.start()
    demo = build_demo(predictor, examples, concurrency=args.concurrency, time_limit=args.time_limit, worklist=store)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=args.concurrency, api_open=False)
    blocked = [str(HERE / "checkpoints"), str(HERE / "data"), str(HERE / "runs"), str(Path.home())]
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        max_file_size="20mb",
        show_error=False,
        ssr_mode=False,
        share=False,
        strict_cors=True,
        enable_monitoring=False,
        mcp_server=serve_mcp,  # tools at /gradio_api/mcp/ (streamable HTTP) and /gradio_api/mcp/sse
        allowed_paths=[],
        blocked_paths=blocked,
        footer_links=["api"],
        auth=check_login(credentials) if credentials else None,
        auth_message="mura-mt: sign in to use this research demo." if credentials else None,
    )
    if node is not None:
        node.stop()


if __name__ == "__main__":
    main()
