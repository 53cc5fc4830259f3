"""A report's figure: a named, captioned PNG, and matplotlib figures to PNG bytes (shared by every report here)."""

from __future__ import annotations

import io
from dataclasses import dataclass


@dataclass
class Figure:
    """One PNG of a report: file name, caption and bytes."""

    name: str
    caption: str
    png: bytes


def png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG bytes (100 dpi), closed afterwards."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
