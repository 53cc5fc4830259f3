"""How often does the "unlike the training images" warning fire, on what? Public real images and fresh
synthetic views, through the Predictor (what users see).

The real images ship with pydicom-data and matplotlib (dev extras), never MURA: its licence forbids copies. Only
two of them are radiographs (RG1, a chest CR; RG3, a lower-leg CR), each in four encodings; ``radiograph_views``
adds crops, flips and a rotation of both so that the share of warned radiograph views rests on more than two
pictures (derived views of two radiographs, not independent ones).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mura_mt.imaging.io import load_radiograph
from mura_mt.inference.ood import WARNING
from mura_mt.inference.predictor import Predictor

CROPS = ((0, 0, 0.6, 0.6), (0.4, 0.4, 1, 1), (0.2, 0.1, 0.8, 0.9), (0, 0.3, 0.7, 1), (0.25, 0.25, 0.75, 0.75))


def public_images() -> dict[str, Path]:
    """Name -> file: the eight CR files, then one of each kind the warning must catch."""
    import data_store
    import matplotlib
    from pydicom.data import get_testdata_file

    store = Path(data_store.__file__).parent / "data"
    radiographs = [f"RG{n}_{encoding}" for n in (1, 3) for encoding in ("UNCR", "UNCI", "J2KR", "J2KI")]
    return {
        **{f"radiograph {name}": store / f"{name}.dcm" for name in radiographs},
        "photo (matplotlib grace_hopper.jpg)": Path(matplotlib.get_data_path()) / "sample_data/grace_hopper.jpg",
        "chest CR (RG1_UNCR)": store / "RG1_UNCR.dcm",
        "CT (693_UNCR)": store / "693_UNCR.dcm",
        "CT (CT_small)": Path(get_testdata_file("CT_small.dcm")),
        "MR of a shoulder (MR2_UNCR)": store / "MR2_UNCR.dcm",
        "MR (MR_small)": Path(get_testdata_file("MR_small.dcm")),
        "MR of an abdomen (MR-SIEMENS)": store / "MR-SIEMENS-DICOM-WithOverlays.dcm",
        "bone scintigraphy (NM, JPEG2000_UNC)": store / "JPEG2000_UNC.dcm",
        "ultrasound (US1_UNCR)": store / "US1_UNCR.dcm",
    }


def radiograph_views(paths: list[Path]) -> list[Image.Image]:
    """Each radiograph as it is, mirrored, rotated, contrast-stretched and in five crops."""
    views = []
    for path in paths:
        image = load_radiograph(path)
        w, h = image.size
        views += [image, ImageOps.mirror(image), image.rotate(90, expand=True), ImageOps.autocontrast(image, 1)]
        views += [image.crop((int(a * w), int(b * h), int(c * w), int(d * h))) for a, b, c, d in CROPS]
    return views


def measure_warnings(predictor: Predictor, fresh_paths: list[str]) -> dict:
    """Warned shares and per-image scores (``unlike_training``; above 1 warns)."""
    images = public_images()
    each = {name: predictor.predict(path) for name, path in images.items()}
    radiographs = [name for name in images if name.startswith("radiograph ")]
    views = predictor.predict_batch(radiograph_views([images["radiograph RG1_UNCR"], images["radiograph RG3_UNCR"]]))
    fresh = [
        view
        for start in range(0, len(fresh_paths), 32)
        for view in predictor.predict_batch(fresh_paths[start : start + 32])
    ]
    warned = lambda predictions: float(np.mean([WARNING in p.warnings for p in predictions]))  # noqa: E731
    return {
        "radiograph_files_warned": warned([each[name] for name in radiographs]),
        "radiograph_files": len(radiographs),
        "radiograph_views_warned": warned(views),
        "radiograph_views": len(views),
        "radiograph_views_lowest_score": min(p.unlike_training for p in views),
        "fresh_synthetic_warned": warned(fresh),
        "fresh_synthetic_views": len(fresh),
        "fresh_synthetic_score_p50_p95_max": np.percentile([p.unlike_training for p in fresh], [50, 95, 100]).tolist(),
        "images": {
            name: {"warned": WARNING in p.warnings, "unlike_training": p.unlike_training, "body_part": p.body_part}
            for name, p in each.items()
            if not name.startswith("radiograph ")
        },
        "radiograph_scores": {name: each[name].unlike_training for name in radiographs},
    }
