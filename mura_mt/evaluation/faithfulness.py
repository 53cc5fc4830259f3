"""How faithful are the Grad-CAM maps? Measured on the synthetic data, whose lesion boxes are known.

pointing game: share of abnormal views with a lesion box whose heatmap maximum lies inside a box. Zhang et al.
    allow 15 pixels of tolerance at the network's input resolution; ``pointing_game`` uses that (converted to
    original pixels per image), ``pointing_game_strict`` a fixed 8 original pixels.
energy pointing game: share of the heatmap's mass inside the boxes (Wang et al., Score-CAM), next to the share of
    the image the boxes cover (what a uniform map would score).
deletion: the gated abnormality probability as the hottest pixels are replaced by a heavily blurred copy of
    the image (so no new edges appear), in steps of 10 %, gate held fixed. A faithful map drops the probability
    faster than a random map of the same smoothness (a 7x7 noise grid, upsampled); lower area is better.
Everything goes through the Predictor, so it measures what users see.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter
from tqdm.auto import tqdm

from mura_mt.inference.predictor import Predictor

FRACTIONS = np.linspace(0.0, 1.0, 11)


def deletion_curve(predictor: Predictor, image: Image.Image, saliency: np.ndarray, body_part: str) -> np.ndarray:
    """Abnormality probability after removing the top ``f`` of pixels by ``saliency``, for f in FRACTIONS."""
    pixels = np.asarray(image, dtype=np.uint8)
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(max(image.size) / 20)), dtype=np.uint8)
    order = np.argsort(-saliency.ravel(), kind="stable")
    probs = []
    for fraction in FRACTIONS:
        edited = pixels.ravel().copy()
        chosen = order[: int(round(fraction * edited.size))]
        edited[chosen] = blurred.ravel()[chosen]
        probs.append(predictor.predict(Image.fromarray(edited.reshape(pixels.shape)), body_part).abnormal_prob)
    return np.asarray(probs)


def random_saliency(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random map as smooth as a 7x7 Grad-CAM grid, upsampled bilinearly."""
    grid = Image.fromarray((rng.random((7, 7)) * 255).astype(np.uint8))
    return np.asarray(grid.resize((shape[1], shape[0]), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0


def measure(
    predictor: Predictor,
    table: pd.DataFrame,
    lesions: pd.DataFrame,
    tolerance_input_px: float = 15.0,
    strict_px: int = 8,
    max_views: int | None = None,
    seed: int = 0,
) -> dict:
    """Pointing game and deletion curves (Grad-CAM vs random) over abnormal views that have lesion boxes.

    Args:
        table: index rows (``path`` absolute); lesions: rows of lesions.csv with ``path`` absolute.
    """
    rng = np.random.default_rng(seed)
    boxes = lesions.groupby("path")[["x0", "y0", "x1", "y1"]].apply(lambda f: f.to_numpy())
    paths = [p for p in table["path"] if p in boxes.index][:max_views]
    hits, strict_hits, energy, area, cam_curves, random_curves = [], [], [], [], [], []
    for path in tqdm(paths, desc="faithfulness"):
        image = Image.open(path).convert("L")
        result = predictor.predict(image, explain=True)
        y, x = np.unravel_index(int(result.heatmap.argmax()), result.heatmap.shape)
        tolerance = tolerance_input_px * max(image.size) / predictor.prep.image_size
        hits.append(_inside(x, y, boxes[path], tolerance))
        strict_hits.append(_inside(x, y, boxes[path], strict_px))
        inside = np.zeros(result.heatmap.shape, dtype=bool)
        for x0, y0, x1, y1 in boxes[path]:
            inside[max(0, y0) : max(0, y1 + 1), max(0, x0) : max(0, x1 + 1)] = True
        energy.append(float(result.heatmap[inside].sum() / max(result.heatmap.sum(), 1e-12)))
        area.append(float(inside.mean()))
        cam_curves.append(deletion_curve(predictor, image, result.heatmap, result.body_part))
        random_curves.append(
            deletion_curve(predictor, image, random_saliency(result.heatmap.shape, rng), result.body_part)
        )
    cam_mean, random_mean = np.mean(cam_curves, axis=0), np.mean(random_curves, axis=0)
    return {
        "n_views": len(paths),
        "pointing_game": float(np.mean(hits)) if hits else None,
        "pointing_tolerance_input_px": tolerance_input_px,
        "pointing_game_strict": float(np.mean(strict_hits)) if strict_hits else None,
        "strict_tolerance_px": strict_px,
        "energy_in_boxes": float(np.mean(energy)) if energy else None,
        "box_area_fraction": float(np.mean(area)) if area else None,
        "deletion_fractions": FRACTIONS.tolist(),
        "deletion_gradcam": cam_mean.tolist(),
        "deletion_random": random_mean.tolist(),
        "deletion_auc_gradcam": float(np.trapezoid(cam_mean, FRACTIONS)),
        "deletion_auc_random": float(np.trapezoid(random_mean, FRACTIONS)),
    }


def _inside(x: int, y: int, boxes: np.ndarray, tolerance: float) -> bool:
    return any(
        x0 - tolerance <= x <= x1 + tolerance and y0 - tolerance <= y <= y1 + tolerance for x0, y0, x1, y1 in boxes
    )
