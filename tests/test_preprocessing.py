import numpy as np
import torch
from PIL import Image

from mura_mt.imaging.preprocessing import Preprocessing, eval_transform, letterbox, normalize, unletterbox

PREP = Preprocessing(64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_letterbox_keeps_aspect_and_centres():
    image = Image.fromarray(np.full((100, 50), 200, dtype=np.uint8), mode="L")
    pixels, geometry = letterbox(image, 64)
    assert pixels.shape == (1, 64, 64) and pixels.dtype == torch.uint8
    assert (geometry.inner_width, geometry.inner_height, geometry.left, geometry.top) == (32, 64, 16, 0)
    assert pixels[0, :, :16].max() == 0 and pixels[0, :, 16:48].min() == 200


def test_eval_transform_is_deterministic_and_normalised():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120), dtype=np.uint8), mode="L")
    a, _ = eval_transform(image, PREP)
    b, _ = eval_transform(image, PREP)
    assert a.shape == (1, 3, 64, 64) and torch.equal(a, b)
    value = (200 / 255 - 0.485) / 0.229
    white = normalize(torch.full((1, 1, 2, 2), 200, dtype=torch.uint8), PREP)
    assert torch.allclose(white[0, 0], torch.full((2, 2), value))


def test_unletterbox_puts_a_corner_back_in_its_corner():
    """A hot spot at the top-left of a wide image's content lands at the top-left of the original."""
    width, height = 300, 150
    _, geometry = letterbox(Image.new("L", (width, height)), 64)
    heat = torch.zeros(1, 1, 64, 64)
    heat[..., geometry.top : geometry.top + 4, geometry.left : geometry.left + 4] = 1.0
    back = unletterbox(heat, geometry)[0, 0]
    assert back.shape == (height, width)
    y, x = np.unravel_index(int(back.argmax()), back.shape)
    assert x < width * 0.1 and y < height * 0.1


def test_serving_imports_no_training_stack():
    """The Predictor path loads neither pandas nor torchvision's v2 augmentation nor Accelerate."""
    import subprocess
    import sys

    probe = (
        "import sys, mura_mt.inference.predictor; "
        "print(sorted(m for m in ('pandas', 'torchvision.transforms.v2', 'accelerate', 'mura_mt.data.augment') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
