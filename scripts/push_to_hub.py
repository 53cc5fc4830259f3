"""Publish a checkpoint: python scripts/push_to_hub.py --checkpoint DIR --repo-id NAME [--private] [--dry-run]
[--evaluation EVAL_DIR/metrics.json] [--out FOLDER].

Verifies the checkpoint (safetensors, hash, body-part order), writes a folder with model.safetensors,
config.json and a model card (README.md: intended use and the not-a-medical-device notice, MURA's licence
terms, metrics with confidence intervals when --evaluation points at an `evaluate.py --report` metrics.json,
body-part order, preprocessing, calibration, known limitations), then uploads it with huggingface_hub.
--dry-run only writes the folder (no network). Log in first (`huggingface-cli login`) or set HF_TOKEN.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from mura_mt.evaluation.model_card import build_model_card
from mura_mt.inference.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_checkpoint, resolve_checkpoint


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder (e.g. runs/mura/best)")
    parser.add_argument("--repo-id", required=True, help="Hub model repo, e.g. YOUR_NAME/mura-mt-resnet18")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="write the folder only; upload nothing")
    parser.add_argument("--evaluation", default=None, help="metrics.json of `evaluate.py --report` for the card")
    parser.add_argument("--out", default=None, help="folder to write (default: a temporary one)")
    args = parser.parse_args(argv)

    directory = resolve_checkpoint(args.checkpoint)
    _, config = load_checkpoint(directory)  # refuses tampered, pickled or foreign checkpoints
    evaluation = json.loads(Path(args.evaluation).read_text()) if args.evaluation else None
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="mura-mt-hub-"))
    out.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        shutil.copy2(directory / name, out / name)
    build_model_card(config, args.repo_id, evaluation).save(out / "README.md")
    print(f"wrote {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
    if args.dry_run:
        return out
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(args.repo_id, repo_type="model", private=args.private, exist_ok=True)
    api.upload_folder(repo_id=args.repo_id, folder_path=str(out), commit_message="mura-mt checkpoint")
    print(f"uploaded to https://huggingface.co/{args.repo_id}")
    return out


if __name__ == "__main__":
    main()
