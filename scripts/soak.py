"""Soak a running app: python scripts/soak.py --url URL --requests N --concurrency K [--hostile-share F]
[--pid PID] [--auth USER:PASSWORD] --out FILE.json.

Sends good synthetic radiographs and hostile files (truncated, bombs, text and HTML named .png, random DICOM,
...) to /predict through gradio_client, at most K at a time, N in all, stopping by itself after --max-minutes.
Writes JSON with requests, answered, refused (clean errors for hostile files or a full queue), errors (anything
unexpected, with examples), p50_ms, p95_ms, golden_unchanged and, with --pid (the server's process id),
rss_growth_mb. Exits 1 when there were unexpected errors or the golden answer changed. Loopback only: point it
at your own server.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from mura_mt.bench.soak import soak


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the app, e.g. http://127.0.0.1:7860/")
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--hostile-share", type=float, default=0.2, help="share of hostile files (0 to 1)")
    parser.add_argument("--pid", type=int, default=None, help="server process id, to measure its memory growth")
    parser.add_argument("--auth", default=os.environ.get("MURA_MT_SOAK_AUTH"), help="USER:PASSWORD if login is on")
    parser.add_argument("--max-minutes", type=float, default=60.0, help="stop sending after this long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    report = soak(
        args.url,
        args.requests,
        args.concurrency,
        args.hostile_share,
        args.pid,
        auth,
        max_seconds=args.max_minutes * 60,
        seed=args.seed,
    )
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "error_examples"}, indent=2))
    if report["errors"] or not report["golden_unchanged"]:
        print("unexpected errors:", *report["error_examples"], sep="\n  ")
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()
