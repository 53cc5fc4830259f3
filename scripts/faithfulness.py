"""Grad-CAM faithfulness on synthetic data: python scripts/faithfulness.py --checkpoint CKPT --data-root ROOT --out DIR.

Writes DIR/faithfulness.json (pointing game; deletion curves and areas for Grad-CAM and a random map) and
DIR/deletion.png. Needs a synthetic tree (its MURA-v1.1/lesions.csv holds the lesion boxes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from mura_mt.data import read_mura_index
from mura_mt.data.index import find_mura_dir
from mura_mt.evaluation.faithfulness import measure
from mura_mt.inference.predictor import Predictor


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--split", default="valid", choices=["train", "valid"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-views", type=int, default=None)
    args = parser.parse_args(argv)

    mura_dir = find_mura_dir(args.data_root)
    lesions = pd.read_csv(mura_dir / "lesions.csv")
    lesions["path"] = [str(mura_dir.parent / p) for p in lesions["path"]]
    table = read_mura_index(args.data_root, args.split)
    report = measure(Predictor.from_pretrained(args.checkpoint), table, lesions, max_views=args.max_views)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "faithfulness.json").write_text(json.dumps(report, indent=2))
    _plot(report, out / "deletion.png")
    print(
        f"pointing game {report['pointing_game']:.3f} (15 input px; strict 8 original px: "
        f"{report['pointing_game_strict']:.3f}) over {report['n_views']} abnormal views; heatmap mass in "
        f"boxes {report['energy_in_boxes']:.3f} (boxes cover {report['box_area_fraction']:.3f}); deletion area "
        f"Grad-CAM {report['deletion_auc_gradcam']:.3f} vs random {report['deletion_auc_random']:.3f}"
    )
    return report


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot(
        report["deletion_fractions"],
        report["deletion_gradcam"],
        "o-",
        label=f"Grad-CAM (area {report['deletion_auc_gradcam']:.3f})",
    )
    ax.plot(
        report["deletion_fractions"],
        report["deletion_random"],
        "s--",
        label=f"random map (area {report['deletion_auc_random']:.3f})",
    )
    ax.set_xlabel("fraction of pixels removed (hottest first)")
    ax.set_ylabel("abnormality probability")
    ax.set_title(f"Deletion curve; pointing game {report['pointing_game']:.2f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
