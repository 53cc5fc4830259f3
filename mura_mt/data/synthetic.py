"""A synthetic MURA-v1.1 tree: procedurally drawn radiograph-like images for tests and the demo.

Owns only generation. The output has MURA's exact layout and header-less CSVs, so every other module reads it
through the same code path as the real data set. Each body part has its own anatomy (number, shape and
arrangement of bones); each view has its own pose, scale, exposure and noise. Abnormal studies carry a
localized finding (fracture line, metal hardware or lytic spot) in most of their views; its box in image
coordinates goes to ``MURA-v1.1/lesions.csv``. It is test and demo data, not a claim about real radiographs.
"""

from __future__ import annotations

import csv
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mura_mt.labels import BODY_PARTS

# Anatomy in a unit square: bones are (x0, y0, x1, y1, width) segments, joints/carpals are (cx, cy, r) blobs.
_Seg = tuple[float, float, float, float, float]
_ANATOMY: dict[str, tuple[list[_Seg], list[tuple[float, float, float]]]] = {
    "elbow": (
        [(0.50, 0.00, 0.47, 0.48, 0.13), (0.45, 0.55, 0.88, 0.92, 0.07), (0.52, 0.50, 0.95, 0.82, 0.06)],
        [(0.48, 0.50, 0.11)],
    ),
    "finger": (
        [(0.50, 0.05, 0.50, 0.30, 0.10), (0.50, 0.35, 0.50, 0.60, 0.11), (0.50, 0.65, 0.50, 0.98, 0.12)],
        [(0.50, 0.325, 0.06), (0.50, 0.625, 0.065)],
    ),
    "forearm": ([(0.38, 0.02, 0.42, 0.98, 0.08), (0.62, 0.02, 0.58, 0.98, 0.065)], [(0.40, 0.98, 0.06)]),
    "hand": (
        [(0.30 + 0.1 * k, 0.78, 0.18 + 0.16 * k, 0.45, 0.045) for k in range(4)]
        + [(0.18 + 0.16 * k, 0.42, 0.14 + 0.17 * k, 0.10, 0.035) for k in range(4)]
        + [(0.30, 0.80, 0.05, 0.55, 0.05)],
        [(0.32 + 0.09 * k, 0.86, 0.045) for k in range(4)],
    ),
    "humerus": ([(0.50, 0.18, 0.52, 0.98, 0.14)], [(0.48, 0.14, 0.17)]),
    "shoulder": (
        [(0.05, 0.12, 0.95, 0.22, 0.05), (0.42, 0.55, 0.36, 1.00, 0.15), (0.70, 0.30, 0.95, 0.90, 0.08)],
        [(0.42, 0.45, 0.18), (0.70, 0.42, 0.07)],
    ),
    "wrist": (
        [(0.38, 1.00, 0.40, 0.66, 0.13), (0.64, 1.00, 0.62, 0.70, 0.09)]
        + [(0.30 + 0.12 * k, 0.28, 0.26 + 0.14 * k, 0.00, 0.05) for k in range(4)],
        [(0.32 + 0.12 * k, 0.55, 0.055) for k in range(4)] + [(0.36 + 0.11 * k, 0.42, 0.05) for k in range(3)],
    ),
}
LESION_KINDS = ("fracture", "hardware", "lytic")


@dataclass(frozen=True)
class _Study:
    split: str
    part: str
    patient: int
    study_number: int
    label: int
    n_views: int
    seed: tuple[int, ...]

    @property
    def rel_dir(self) -> str:
        suffix = "positive" if self.label else "negative"
        return (
            f"MURA-v1.1/{self.split}/XR_{self.part.upper()}/patient{self.patient:05d}/study{self.study_number}_{suffix}"
        )


def make_synthetic_mura(
    out: str | Path,
    studies_per_part: int = 100,
    valid_studies_per_part: int = 25,
    seed: int = 0,
    workers: int = 2,
    progress: bool = False,
) -> Path:
    """Write ``OUT/MURA-v1.1/`` (train and valid splits, header-less CSVs, lesions.csv); return its path."""
    out = Path(out)
    mura_dir = out / "MURA-v1.1"
    studies = _plan(studies_per_part, "train", 1, seed) + _plan(valid_studies_per_part, "valid", 11185, seed)
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(_draw_study, [(s, str(out)) for s in studies], chunksize=8)
        if progress:
            from tqdm.auto import tqdm

            results = tqdm(results, total=len(studies), desc="synthetic studies")
        lesion_rows = [row for rows in results for row in rows]
    for split in ("train", "valid"):
        chosen = [s for s in studies if s.split == split]
        with open(mura_dir / f"{split}_image_paths.csv", "w", newline="") as f:
            for s in chosen:
                f.writelines(f"{s.rel_dir}/image{i + 1}.png\n" for i in range(s.n_views))
        with open(mura_dir / f"{split}_labeled_studies.csv", "w", newline="") as f:
            f.writelines(f"{s.rel_dir}/,{s.label}\n" for s in chosen)
    with open(mura_dir / "lesions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "x0", "y0", "x1", "y1", "kind"])
        writer.writerows(lesion_rows)
    return mura_dir


def _plan(n_per_part: int, split: str, first_patient: int, seed: int) -> list[_Study]:
    """Decide patients, labels and view counts. Some patients have studies in several body parts."""
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    studies: list[_Study] = []
    next_patient = first_patient
    counts: dict[tuple[int, str], int] = {}
    for part_idx, part in enumerate(BODY_PARTS):
        for k in range(n_per_part):
            if studies and rng.random() < 0.15:
                patient = studies[int(rng.integers(len(studies)))].patient  # returning patient, any body part
            else:
                patient, next_patient = next_patient, next_patient + 1
            counts[(patient, part)] = counts.get((patient, part), 0) + 1
            label = int(rng.random() < 0.4)
            n_views = int(rng.choice([1, 2, 3, 4], p=[0.15, 0.35, 0.35, 0.15]))
            studies.append(
                _Study(split, part, patient, counts[(patient, part)], label, n_views, (seed, part_idx, k, patient))
            )
    return studies


def _draw_study(args: tuple[_Study, str]) -> list[list]:
    study, out = args
    rng = np.random.default_rng(list(study.seed) + [0 if study.split == "train" else 1])
    folder = Path(out) / study.rel_dir
    folder.mkdir(parents=True, exist_ok=True)
    segments, blobs = _ANATOMY[study.part]
    lesion = None
    if study.label:  # one finding per study, at one anatomical place, seen in most views
        seg = segments[int(rng.integers(len(segments)))]
        lesion = (LESION_KINDS[int(rng.integers(3))], seg, float(rng.uniform(0.25, 0.75)))
    shows = rng.random(study.n_views) < 0.9
    if lesion is not None and not shows.any():
        shows[int(rng.integers(study.n_views))] = True
    rows = []
    for view in range(study.n_views):
        image, box = _draw_view(study.part, rng, lesion if shows[view] else None)
        rel = f"{study.rel_dir}/image{view + 1}.png"
        if rng.random() < 0.15:  # MURA has some RGB files with three equal channels
            image = image.convert("RGB")
        image.save(Path(out) / rel)
        if box is not None:
            rows.append([rel, *box, lesion[0]])
    return rows


def _draw_view(part: str, rng: np.random.Generator, lesion) -> tuple[Image.Image, tuple[int, ...] | None]:
    long_side, short_side = 512, int(rng.integers(300 if part != "finger" else 200, 513))
    width, height = (short_side, long_side) if rng.random() < 0.8 else (long_side, short_side)
    frame = min(width, height) * rng.uniform(0.8, 1.05)
    angle = math.radians(rng.uniform(-25, 25))
    centre = (width / 2 + rng.uniform(-0.08, 0.08) * width, height / 2 + rng.uniform(-0.08, 0.08) * height)
    stretch = max(width, height) / min(width, height)

    def place(x: float, y: float) -> tuple[float, float]:
        dx, dy = (x - 0.5) * frame, (y - 0.5) * frame * (stretch if height > width else 1.0)
        return (
            centre[0] + dx * math.cos(angle) - dy * math.sin(angle),
            centre[1] + dx * math.sin(angle) + dy * math.cos(angle),
        )

    segments, blobs = _ANATOMY[part]
    tissue = Image.new("L", (width, height), int(rng.integers(8, 30)))
    draw_tissue = ImageDraw.Draw(tissue)
    for x0, y0, x1, y1, w in segments:
        draw_tissue.line([place(x0, y0), place(x1, y1)], fill=int(rng.integers(55, 80)), width=int(w * frame * 3.2))
    tissue = tissue.filter(ImageFilter.GaussianBlur(frame * 0.06))

    bone_value = int(rng.integers(170, 225))
    draw = ImageDraw.Draw(tissue)
    for x0, y0, x1, y1, w in segments:
        a, b, px = place(x0, y0), place(x1, y1), max(3, int(w * frame))
        draw.line([a, b], fill=bone_value, width=px)
        for end in (a, b):
            draw.ellipse([end[0] - px * 0.6, end[1] - px * 0.6, end[0] + px * 0.6, end[1] + px * 0.6], fill=bone_value)
        draw.line([a, b], fill=bone_value - 45, width=max(1, px // 2))  # medullary canal
    for cx, cy, r in blobs:
        c, pr = place(cx, cy), r * frame
        draw.ellipse([c[0] - pr, c[1] - pr, c[0] + pr, c[1] + pr], fill=bone_value - 10)

    box = None
    if lesion is not None:
        box = _draw_lesion(draw, lesion, place, frame, rng, bone_value)
    image = tissue.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.4)))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    pixels = pixels ** rng.uniform(0.8, 1.25) * rng.uniform(0.8, 1.1)
    pixels += rng.normal(0, rng.uniform(0.01, 0.035), pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels * 255, 0, 255).astype(np.uint8), mode="L"), box


def _draw_lesion(draw: ImageDraw.ImageDraw, lesion, place, frame: float, rng, bone_value: int) -> tuple[int, ...]:
    kind, (x0, y0, x1, y1, w), t = lesion
    cx, cy = place(x0 + t * (x1 - x0), y0 + t * (y1 - y0))
    ax, ay = place(x1, y1)
    bx, by = place(x0, y0)
    length = math.hypot(ax - bx, ay - by) or 1.0
    ux, uy = (ax - bx) / length, (ay - by) / length  # along the bone
    half = max(8.0, w * frame * 0.9)
    if kind == "fracture":  # a dark gap across the bone, slightly oblique
        nx, ny = -uy + 0.3 * ux, ux + 0.3 * uy
        pts = [(cx - nx * half, cy - ny * half), (cx + nx * half, cy + ny * half)]
        draw.line(pts, fill=int(rng.integers(10, 35)), width=max(4, int(frame * 0.035)))
    elif kind == "hardware":  # a bright plate with screws along the bone
        along = half * 2.2
        plate = [
            (cx - ux * along - uy * half * 0.35, cy - uy * along + ux * half * 0.35),
            (cx + ux * along - uy * half * 0.35, cy + uy * along + ux * half * 0.35),
            (cx + ux * along + uy * half * 0.35, cy + uy * along - ux * half * 0.35),
            (cx - ux * along + uy * half * 0.35, cy - uy * along - ux * half * 0.35),
        ]
        draw.polygon(plate, fill=255)
        for s in (-0.7, 0.0, 0.7):
            sx, sy, r = cx + ux * along * s, cy + uy * along * s, half * 0.3
            draw.ellipse([sx - r, sy - r, sx + r, sy + r], fill=max(0, bone_value - 120))
        half = along
    else:  # lytic: a dark, ragged hole inside the bone
        r = half * 0.85
        draw.ellipse([cx - r, cy - r * 0.8, cx + r, cy + r * 0.8], fill=int(rng.integers(20, 50)))
    x_lo, x_hi, y_lo, y_hi = cx - half * 1.2, cx + half * 1.2, cy - half * 1.2, cy + half * 1.2
    return tuple(int(round(v)) for v in (x_lo, y_lo, x_hi, y_hi))
