"""The Gradio app: web UI, `gradio_client` API (/predict, /predict_study), MCP tools and a Hugging Face Space.

`build_demo(predictor)` assembles the page from its tabs (``mura_mt/web/``: the upload tab with the two endpoints,
the worklist tab); `main` reads the options, builds the Predictor once and launches. The app never touches tensors.
Run: python app.py [--checkpoint CKPT] [--host H] [--port P] [--precision auto|fp32|bf16]
[--runtime auto|torch|onnx|onnx-int8] [--device auto|cpu|cuda] [--time-limit S] [--no-mcp]
[--worklist-db FILE_OR_URL [--dicom-port PORT --dicom-ae-title AET --store-dir DIR --return-to AET@HOST:PORT ...]
[--hl7-port PORT ...]] [--auth-file USERS] [--trusted-proxy ADDR --group-roles GROUP=ROLE,...]
[--session-idle-minutes M];
env MURA_MT_CHECKPOINT does the same as --checkpoint, MURA_MT_RUNTIME as --runtime. --auth-file (scripts/users.py)
or the hospital's proxy turn on the login and the roles (mura_mt.web.login); MURA_MT_AUTH="user:password[,...]" (a
Spaces secret, plain passwords) does for a demo. The
two endpoints are also MCP tools (``predict``, ``predict_study``) at /gradio_api/mcp/; on a ZeroGPU Space each
analysis runs inside ``@spaces.GPU``. With ``--worklist-db`` (env MURA_MT_WORKLIST_DB) the page opens on the triage
worklist (``mura_mt.web.worklist_tab``) and the API has ``/worklist``; with ``--dicom-port`` too, this process is
also a DICOM node (``mura_mt.dicom_node``) on the same Predictor, and with ``--hl7-port`` it takes the RIS's reports.
Off loopback the worklist needs a login and HTTPS (--ssl-certfile/--ssl-keyfile, or --behind-https-proxy);
--audit-log records who opened which study.
Requests run ``concurrency`` at once (the Predictor serialises only the model call), 16 more may wait, and an
analysis longer than ``time_limit`` seconds answers with a clean error.
"""

from __future__ import annotations

# First: on a ZeroGPU Space, `spaces` must be imported before anything initialises CUDA.
from mura_mt.web.zerogpu import on_zero_gpu, resolve_device  # isort: skip

import argparse
import contextlib
import logging
import os
from pathlib import Path

import gradio as gr

from mura_mt.site.hl7_listener import add_hl7_options
from mura_mt.site.monitoring import add_metrics_options
from mura_mt.dicom_node.node import NodeOptions, add_node_options
from mura_mt.site.services import start_site
from mura_mt.inference.predictor import Predictor
from mura_mt.scratch import process_folder, start_process
from mura_mt.web.login import AuthError, WebAccess, add_access_options, is_loopback
from mura_mt.web.upload_tab import UploadTab

HERE = Path(__file__).resolve().parent
DEMO_CHECKPOINT = HERE / "checkpoints" / "demo"
QUEUE_SIZE = 16
DEFAULT_TIME_LIMIT_S = 60.0
DEFAULT_CONCURRENCY = 2 * (os.cpu_count() or 1)  # measured on 2 cores: 4 beat 2 and 8 (docs/benchmarks.md)
DISCLAIMER = (
    "**Research demo: not a medical device, not for diagnosis.** The bundled weights were trained on "
    "*synthetic* radiographs; real weights come from training on MURA."
)


def build_demo(
    predictor: Predictor,
    examples: list[str] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    time_limit: float = DEFAULT_TIME_LIMIT_S,
    cache_examples: bool = True,
    site=None,
    access: WebAccess | None = None,
) -> gr.Blocks:
    """The whole UI and API around one Predictor; ``concurrency`` requests of each route run at once, and an
    analysis longer than ``time_limit`` seconds is answered with an error. ``examples`` are answered at launch
    (``cache_examples``) so that clicking one shows its result at once. With a ``site`` (``site.services.Site``:
    its worklist store, audit trail and drift monitor) the page also has the Worklist and Performance tabs, and the
    API ``/worklist``, ``/record_read`` and ``/performance``; the audit records who looked at which study. ``access``
    (``web.login.WebAccess``): who may use which tab and endpoint; without it, everyone may use everything."""
    upload = UploadTab(predictor, concurrency, time_limit, access)
    with gr.Blocks(title="mura-mt: bone X-ray triage", analytics_enabled=False, delete_cache=(900, 900)) as demo:
        gr.Markdown("# mura-mt: bone X-ray triage with explanations")
        gr.Markdown(DISCLAIMER)
        if access is not None:
            access.render_signed_in(demo)
        # Without a worklist the page is one view, as it always was; with one, the page opens on the worklist and
        # the upload is the first tab.
        with gr.Tabs(selected="worklist") if site is not None else contextlib.nullcontext():
            with gr.Tab("Analyse images", id="upload") if site is not None else contextlib.nullcontext():
                upload.render(examples, cache_examples)
            if site is not None:
                from mura_mt.web.performance_tab import performance_tab
                from mura_mt.web.worklist_tab import worklist_tab

                worklist_tab(demo, site.store, predictor, audit=site.audit, drift_monitor=site.drift, access=access)
                performance_tab(demo, site.store, site.drift, access=access)
        upload.render_api()
    return demo


def resolve_checkpoint_arg(cli_value: str | None) -> str:
    return cli_value or os.environ.get("MURA_MT_CHECKPOINT") or str(DEMO_CHECKPOINT)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Serve the mura-mt Gradio app.")
    parser.add_argument("--checkpoint", default=None,
                        help="folder or Hub repo id (default: env MURA_MT_CHECKPOINT, else the bundled demo)")  # fmt: skip
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
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
    parser.add_argument("--ssl-certfile", default=None, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--ssl-keyfile", default=None, help="the private key of --ssl-certfile (PEM)")
    parser.add_argument("--behind-https-proxy", action="store_true",
                        help="a proxy in front terminates TLS (a Space, a hospital's)")  # fmt: skip
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
    add_hl7_options(site)
    add_metrics_options(site)
    add_access_options(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    start_process()  # clean up after killed runs; SIGTERM exits like Ctrl-C, so this run's folders go too
    try:  # a malformed users file stops the app before anything loads
        web = WebAccess.from_args(args, os.environ.get("MURA_MT_AUTH"))
    except AuthError as err:
        parser.error(str(err))
    node_options = _site_options(parser, args, web.access.enabled)
    checkpoint = resolve_checkpoint_arg(args.checkpoint)
    # Gradio's MCP route does not go through the login, so a protected app must not open it.
    serve_mcp = not args.no_mcp and not web.access.enabled
    if web.access.enabled and not args.no_mcp:
        print("mura-mt: the MCP tools are off because a login is configured (the MCP route has no login).")
    # The start-up line names the runtime, precision, threads and CPU features chosen (mura_mt.inference.runners).
    logging.getLogger("mura_mt").setLevel(logging.INFO)
    logging.getLogger("mura_mt").addHandler(logging.StreamHandler())
    precision = args.precision
    if precision == "auto" and on_zero_gpu():
        # ZeroGPU's cards (H200 slices) compute bf16 natively, and CUDA cannot be queried outside @spaces.GPU.
        precision = "bf16"
    predictor = Predictor.from_pretrained(
        checkpoint, device=resolve_device(args.device), precision=precision, runtime=args.runtime
    )
    examples = sorted(str(p) for p in (HERE / "examples").glob("*.png"))
    # Gradio keys its example cache by component id, not by model: a fresh folder per launch, so answers cached
    # for one checkpoint are never shown for another. It and the uploads go with the process (mura_mt.scratch).
    os.environ.setdefault("GRADIO_EXAMPLES_CACHE", str(process_folder("examples")))
    os.environ.setdefault("GRADIO_TEMP_DIR", str(process_folder("uploads")))
    site = None
    if args.worklist_db:
        try:
            site = start_site(args, node_options, predictor, checkpoint, access=web.access)
        except (ConnectionError, RuntimeError, ValueError, OSError) as err:
            parser.error(str(err))
    web.open(site.audit if site else None, args.audit_log, args.audit_max_mb)
    demo = build_demo(predictor, examples, args.concurrency, args.time_limit, site=site, access=web)
    try:
        _launch(demo, args, web, serve_mcp)
    finally:
        if site is not None:
            site.stop()


def _site_options(parser: argparse.ArgumentParser, args, login: bool) -> NodeOptions | None:
    """Refuse what would expose patient data; the node's options when this process is also a node."""
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        parser.error("HTTPS needs --ssl-certfile and --ssl-keyfile together")
    if (args.dicom_port is not None or args.hl7_port is not None) and not args.worklist_db:
        parser.error("--dicom-port and --hl7-port need --worklist-db: the store of the studies and their labels")
    if args.worklist_db and not is_loopback(args.host):
        if not login:
            parser.error(
                f"the worklist shows patients' names and ids, so on --host {args.host} it needs a login: "
                "--auth-file FILE (scripts/users.py), --trusted-proxy ADDR for the hospital's single sign-on, or "
                "MURA_MT_AUTH=user:password for a demo (or serve on 127.0.0.1)"
            )
        if not args.ssl_certfile and not args.behind_https_proxy:
            parser.error(
                f"the worklist shows patients' names and ids, so on --host {args.host} it needs HTTPS: "
                "--ssl-certfile FILE --ssl-keyfile FILE, or --behind-https-proxy where a proxy terminates TLS"
            )
    if args.dicom_port is None:
        return None
    try:
        return NodeOptions.from_args(args, args.dicom_ae_title, args.dicom_port, args.dicom_host, args.worklist_db)
    except ValueError as err:
        parser.error(str(err))


def _launch(demo: gr.Blocks, args: argparse.Namespace, web: WebAccess, serve_mcp: bool) -> None:
    """Serve until stopped: a bounded queue, no file route beyond Gradio's own uploads, the login and the
    hospital's proxy when configured (``web.login``), HTTPS with --ssl-certfile (Gradio's own check that the server
    is up then skips verifying the certificate: a site's own CA is not in its trust store)."""
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
        **web.launch_options(),
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        ssl_verify=not args.ssl_certfile,
    )


if __name__ == "__main__":
    main()
