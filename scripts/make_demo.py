"""Package a trained run as the bundled demo.

python scripts/make_demo.py --run runs/synthetic --data-root data/synthetic

Re-exports RUN/best in half precision to checkpoints/demo/ (with a model card and its metrics on the synthetic
valid split, measured through the Predictor) and copies a few synthetic valid images to examples/.
The whole demo is reproducible with:
    accelerate launch --num_processes 1 scripts/train.py --config configs/synthetic.yaml
    python scripts/make_demo.py --run runs/synthetic --data-root data/synthetic
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd
import torch

from mura_mt.data import read_mura_index
from mura_mt.data.index import find_mura_dir
from mura_mt.evaluation.evaluate import evaluate_checkpoint
from mura_mt.evaluation.metrics import format_table
from mura_mt.evaluation.drift import reference_from_predictor, write_reference
from mura_mt.inference.checkpoint import export, load_checkpoint, load_extra_tensors
from mura_mt.inference.ood import OutOfDistribution
from mura_mt.inference.predictor import Predictor

CARD = """# mura-mt demo checkpoint

**Demo weights trained on SYNTHETIC radiographs. Not a medical device; not for diagnosis.** They exist so that the
app, the API and the tests run out of the box. Real weights come from training on MURA-v1.1
(`accelerate launch scripts/train.py --config configs/mura.yaml data.root=...`). Every real radiograph is unlike
these training images, and the app says so above the verdict: read the demo's verdicts on real images as noise.

- Architecture: {backbone} shared by a 7-way body-part head and seven anomaly heads; {size} px letterboxed input.
- Training data: `scripts/make_synthetic_mura.py` (procedural anatomies with fractures, hardware and lytic spots).
- Reproduce: `accelerate launch --num_processes 1 scripts/train.py --config configs/synthetic.yaml`, then
  `python scripts/make_demo.py --run runs/synthetic --data-root data/synthetic`.
- Weights: half precision safetensors, sha256 in config.json.

## Metrics on the synthetic valid split (held out, never used for training or fitting)

```
{table}
```
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="training output folder (its best/ is packaged)")
    parser.add_argument("--data-root", required=True, help="the synthetic tree the run was trained on")
    parser.add_argument("--out", default="checkpoints/demo")
    parser.add_argument("--examples-dir", default="examples")
    args = parser.parse_args(argv)

    model, config = load_checkpoint(Path(args.run) / "best")
    meta = {
        k: v for k, v in config.items() if k not in ("format_version", "body_parts", "weights_sha256", "weights_dtype")
    }
    # The out-of-distribution statistics keep their own precision (the bank half, the covariance float32).
    ood = OutOfDistribution.from_tensors(load_extra_tensors(Path(args.run) / "best"))
    out = export(args.out, model, meta, dtype=torch.float16, extra_tensors=ood.to_tensors() if ood else None)
    table = read_mura_index(args.data_root, "valid")
    fp32 = Predictor.from_pretrained(out, precision="fp32", runtime="torch")  # the reference int8 is gated against
    write_reference(out, reference_from_predictor(fp32, table))
    metrics, _ = evaluate_checkpoint(fp32, table)
    (out / "metrics.json").write_text(json.dumps({"split": "synthetic valid", **metrics}, indent=2))
    (out / "README.md").write_text(
        CARD.format(
            backbone=config["model"]["backbone"],
            size=config["preprocessing"]["image_size"],
            table=format_table(metrics),
        )
    )
    examples = Path(args.examples_dir)
    examples.mkdir(exist_ok=True)
    mura_dir = find_mura_dir(args.data_root)
    with_lesion = {str(mura_dir.parent / p) for p in pd.read_csv(mura_dir / "lesions.csv")["path"]}
    for part, label in (("wrist", 1), ("hand", 0), ("elbow", 1), ("shoulder", 0)):
        # an abnormal example must show its finding: abnormal studies have views without one
        chosen = table[(table["body_part"] == part) & (table["label"] == label)]
        if label:
            chosen = chosen[chosen["path"].isin(with_lesion)]
        shutil.copy(chosen["path"].iloc[0], examples / f"synthetic_{part}_{'abnormal' if label else 'normal'}.png")
    print(format_table(metrics))
    print(f"demo checkpoint at {out}; examples in {examples}")


if __name__ == "__main__":
    main()
