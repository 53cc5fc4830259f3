"""What goes back to PACS, in new series of the SAME study (highdicom): one RGB Secondary Capture per analysed view
(the view with its Grad-CAM overlay and a burned-in banner), and what the SC and the SR (``sr.py``) share: the
model's identity, the contributing equipment, and the source views' headers with absent Type 2 attributes written
empty (never invented: a CR that omits the patient's birth date or sex still gets its answer). Patient and study
attributes are copied from the received views, character set included; every object gets new UIDs; series
descriptions start with "mura-mt" and say "NOT FOR DIAGNOSTIC USE" (which is also how the node recognises its own
objects coming back).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mura_mt.dicom_node.receive import OWN_MANUFACTURER
from mura_mt.inference.explain import overlay

SC_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage: the Grad-CAM pictures

SC_SERIES_DESCRIPTION = "mura-mt Grad-CAM overlay - NOT FOR DIAGNOSTIC USE"
SC_SERIES_NUMBER = 9901
# Type 2 attributes of the Patient and General Study modules: present in every output, empty where the source has
# none (many CR systems leave birth date, sex, referring physician or study ID out altogether)
PATIENT_AND_STUDY_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
PIXEL_DATA = 0x7FE00010


@dataclass(frozen=True)
class ModelIdentity:
    name: str  # e.g. "mura-mt resnet18 (checkpoints/demo)"
    weights_sha256: str
    node_ae_title: str

    @property
    def device_uid(self) -> str:
        """The node as an SR observer device: the same UID for the same node and weights, a new one when the
        weights change (IHE AIR: a Device UID that changes with the model)."""
        from pydicom.uid import generate_uid

        return generate_uid(entropy_srcs=["mura-mt observer device", self.node_ae_title, self.weights_sha256])

    @property
    def version(self) -> str:
        """The software's version (the weights are named by their sha256 beside it)."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("mura-mt")
        except PackageNotFoundError:  # run from a checkout that was never installed
            return "unknown"

    @classmethod
    def of(cls, checkpoint, node_ae_title: str) -> ModelIdentity:
        """The identity of the checkpoint a node serves (its backbone, folder name and weights' sha256)."""
        from mura_mt.inference.checkpoint import checkpoint_config

        config = checkpoint_config(checkpoint)
        name = f"mura-mt {config['model']['backbone']} ({Path(str(checkpoint)).name})"
        return cls(name, config["weights_sha256"], node_ae_title)


def banner_lines(result, warnings: list[str]) -> list[str]:
    verdict = "ABNORMAL" if result.is_abnormal else "normal"
    lines = [f"mura-mt: {verdict}  p(abnormal) {result.abnormal_prob:.2f} (threshold {result.threshold:.2f})  "
             f"body part {result.body_part}"]  # fmt: skip
    lines += [f"WARNING: {w}" for w in warnings]
    lines.append("NOT FOR DIAGNOSTIC USE - research software")
    return lines


def annotated_view(gray: Image.Image, heatmap: np.ndarray, lines: list[str]) -> np.ndarray:
    """The view with its Grad-CAM overlay and the banner burned in above it -> uint8 RGB [H, W, 3]."""
    picture = overlay(gray, heatmap)
    size = max(12, picture.width // 45)
    font = ImageFont.load_default(size=size)
    wrapped = [part for line in lines for part in textwrap.wrap(line, max(20, int(picture.width / (size * 0.55))))]
    banner = Image.new("RGB", (picture.width, (size + 6) * len(wrapped) + 8), "black")
    draw = ImageDraw.Draw(banner)
    for row, line in enumerate(wrapped):
        colour = "#ffd24d" if line.startswith(("WARNING", "NOT FOR")) else "white"
        draw.text((8, 4 + row * (size + 6)), line, fill=colour, font=font)
    canvas = Image.new("RGB", (picture.width, banner.height + picture.height))
    canvas.paste(banner, (0, 0))
    canvas.paste(picture, (0, banner.height))
    return np.asarray(canvas)


def source_header(view):
    """The view's header without its pixels, with absent Type 2 patient and study attributes added empty: what
    highdicom copies into an output (it reads them all and fails on an absent one)."""
    import pydicom

    header = pydicom.Dataset()
    for element in view:
        if element.tag != PIXEL_DATA:
            header.add(element)
    for keyword in PATIENT_AND_STUDY_TYPE2:
        if keyword not in header:
            setattr(header, keyword, "")
    return header


def equipment(model: ModelIdentity):
    from highdicom import ContributingEquipment
    from pydicom.sr.codedict import codes

    return [
        ContributingEquipment(
            manufacturer=OWN_MANUFACTURER,
            purpose_of_reference=codes.DCM.ProcessingEquipment,
            manufacturer_model_name=model.name,
            software_versions=model.weights_sha256,  # 64 hex digits: the longest a DICOM LO value may be
            station_name=model.node_ae_title,
            contribution_description="Abnormality triage and Grad-CAM overlay; not for diagnostic use",
        )
    ]


def _copy_character_set(target, source) -> None:
    if "SpecificCharacterSet" in source:
        target.SpecificCharacterSet = source.SpecificCharacterSet


def secondary_captures(views, grays, result, warnings: list[str], model: ModelIdentity) -> list:
    """One RGB Secondary Capture per analysed view (``views``: their datasets; ``grays``: decoded images)."""
    from highdicom.sc import SCImage
    from pydicom.uid import generate_uid

    series_uid = generate_uid()
    captures = []
    for number, (view, gray, prediction) in enumerate(zip(views, grays, result.views), start=1):
        pixels = annotated_view(gray, prediction.heatmap, banner_lines(result, warnings))
        capture = SCImage.from_ref_dataset(
            ref_dataset=source_header(view),
            pixel_array=pixels,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            patient_orientation=("L", "F"),  # replaced below by the source's own (highdicom insists on a value)
            series_instance_uid=series_uid,
            series_number=SC_SERIES_NUMBER,
            sop_instance_uid=generate_uid(),
            instance_number=number,
            manufacturer=OWN_MANUFACTURER,
            contributing_equipment=equipment(model),
        )
        _copy_character_set(capture, view)
        # Rows and columns run as in the source view (the banner only adds rows above it): its orientation, or
        # empty (Type 2) when the source does not say.
        capture.PatientOrientation = view.get("PatientOrientation", "")
        # General Series, Type 2C for paired body parts: the source's laterality, or empty when it does not say
        capture.Laterality = view.get("Laterality", "")
        capture.SeriesDescription = SC_SERIES_DESCRIPTION
        capture.BurnedInAnnotation = "YES"
        capture.ImageComments = "NOT FOR DIAGNOSTIC USE"
        captures.append(capture)
    return captures


def sent_pictures(store, study_uid: str, max_side: int = 320) -> list[tuple[str, bytes]]:
    """[(caption, PNG)] of the Grad-CAM Secondary Captures the node made for a study, read from its outbox (where
    this machine still has them): the pictures the reading room saw, for the site report's disagreements."""
    import io

    import pydicom

    pictures, seen = [], set()
    for row in store.deliveries(study_uid):
        if row["sop_uid"] in seen or not Path(row["path"]).is_file():
            continue
        seen.add(row["sop_uid"])
        dataset = pydicom.dcmread(row["path"])
        if str(dataset.SOPClassUID) != SC_SOP_CLASS:
            continue
        image = Image.fromarray(dataset.pixel_array)
        image.thumbnail((max_side, max_side))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        pictures.append((f"the node's picture {len(pictures) + 1}", buffer.getvalue()))
    return pictures
