"""The seven MURA body parts and name parsing.

The order of BODY_PARTS is a checkpoint contract: column k of both model heads is BODY_PARTS[k].
This module imports nothing else from the project.
"""

from __future__ import annotations

BODY_PARTS: tuple[str, ...] = ("elbow", "finger", "forearm", "hand", "humerus", "shoulder", "wrist")
PART_TO_IDX: dict[str, int] = {part: idx for idx, part in enumerate(BODY_PARTS)}


def parse_body_part(name: str) -> str:
    """Normalise a body-part name: ``XR_WRIST``, ``Wrist`` and ``wrist`` all give ``"wrist"``.

    Raises:
        ValueError: the name is not one of the seven MURA body parts.
    """
    cleaned = str(name).strip().lower()
    if cleaned.startswith("xr_"):
        cleaned = cleaned[3:]
    if cleaned not in PART_TO_IDX:
        raise ValueError(f"unknown body part {name!r}; expected one of {', '.join(BODY_PARTS)}")
    return cleaned


# How DICOM's BodyPartExamined names the seven parts (PS3.16 CID 4031 defined terms).
BODY_PART_TERMS = {
    "elbow": "ELBOW",
    "finger": "FINGER",
    "forearm": "FOREARM",
    "hand": "HAND",
    "humerus": "HUMERUS",
    "shoulder": "SHOULDER",
    "wrist": "WRIST",
}
