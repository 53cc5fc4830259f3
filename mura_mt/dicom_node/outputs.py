"""What goes back to PACS, in new series of the SAME study (highdicom): one RGB Secondary Capture per analysed view
(the view with its Grad-CAM overlay and a burned-in banner) and one Comprehensive SR with the answer as separate
content items. Patient and study attributes are copied from the received views, character set included; every
object gets new UIDs and names the node and the model as contributing equipment; series descriptions start with
"mura-mt" and say "NOT FOR DIAGNOSTIC USE" (which is also how the node recognises its own objects coming back).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mura_mt.dicom_node.receive import OWN_MANUFACTURER
from mura_mt.inference.explain import overlay

SCHEME = "99MURAMT"  # a private coding scheme ("99" prefix): the concepts below are this project's own
SC_SERIES_DESCRIPTION = "mura-mt Grad-CAM overlay - NOT FOR DIAGNOSTIC USE"
SR_SERIES_DESCRIPTION = "mura-mt triage result - NOT FOR DIAGNOSTIC USE"
SC_SERIES_NUMBER, SR_SERIES_NUMBER = 9901, 9902


@dataclass(frozen=True)
class ModelIdentity:
    name: str  # e.g. "mura-mt resnet18 (checkpoints/demo)"
    weights_sha256: str
    node_ae_title: str

    @classmethod
    def of(cls, checkpoint, node_ae_title: str) -> ModelIdentity:
        """The identity of the checkpoint a node serves (its backbone, folder name and weights' sha256)."""
        from mura_mt.inference.checkpoint import checkpoint_config

        config = checkpoint_config(checkpoint)
        name = f"mura-mt {config['model']['backbone']} ({Path(str(checkpoint)).name})"
        return cls(name, config["weights_sha256"], node_ae_title)


def concept(code: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(code, SCHEME, meaning)


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


def _equipment(model: ModelIdentity):
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
            ref_dataset=view,
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
            contributing_equipment=_equipment(model),
        )
        _copy_character_set(capture, view)
        # Rows and columns run as in the source view (the banner only adds rows above it): its orientation, or
        # empty (Type 2) when the source does not say.
        capture.PatientOrientation = view.get("PatientOrientation", "")
        capture.SeriesDescription = SC_SERIES_DESCRIPTION
        capture.BurnedInAnnotation = "YES"
        capture.ImageComments = "NOT FOR DIAGNOSTIC USE"
        captures.append(capture)
    return captures


def structured_report(views, result, warnings: list[str], model: ModelIdentity):
    """A Comprehensive SR holding, as separate content items: body part, probability (0..1), threshold, verdict,
    each warning, model name, weights sha256, and a reference to every analysed image."""
    from highdicom.sr import (
        CodeContentItem,
        ComprehensiveSR,
        ContainerContentItem,
        ImageContentItem,
        NumContentItem,
        TextContentItem,
    )
    from pydicom.sr.coding import Code
    from pydicom.uid import generate_uid

    contains = "CONTAINS"
    unitless = Code("1", "UCUM", "no units")
    verdict = concept("ABNORMAL", "abnormal") if result.is_abnormal else concept("NORMAL", "normal")
    root = ContainerContentItem(name=concept("RESULT", "mura-mt triage result"))
    probability = float(result.abnormal_prob)
    items = [
        TextContentItem(concept("BODYPART", "Body part"), result.body_part, contains),
        NumContentItem(concept("PROB", "Abnormality probability"), probability, unitless, None, contains),
        NumContentItem(concept("THRESHOLD", "Decision threshold"), float(result.threshold), unitless, None, contains),
        CodeContentItem(concept("VERDICT", "Verdict"), verdict, contains),
        *(TextContentItem(concept("WARNING", "Warning"), w, contains) for w in warnings),
        TextContentItem(concept("MODEL", "Model"), model.name, contains),
        TextContentItem(concept("WEIGHTS", "Weights sha256"), model.weights_sha256, contains),
    ]
    image = concept("IMAGE", "Analysed image")
    items += [ImageContentItem(image, v.SOPClassUID, v.SOPInstanceUID, relationship_type=contains) for v in views]
    root.ContentSequence = items
    report = ComprehensiveSR(
        evidence=list(views),
        content=root,
        series_instance_uid=generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=OWN_MANUFACTURER,
        is_complete=True,
        contributing_equipment=_equipment(model),
    )
    _copy_character_set(report, views[0])
    report.SeriesDescription = SR_SERIES_DESCRIPTION
    return report


def read_report(report) -> dict:
    """The answer back out of an SR this module wrote (for tests and for people reading one)."""
    answer: dict = {"warnings": [], "images": []}
    for item in report.ContentSequence:
        code = item.ConceptNameCodeSequence[0].CodeValue
        if code == "PROB":
            answer["abnormal_prob"] = float(item.MeasuredValueSequence[0].NumericValue)
        elif code == "THRESHOLD":
            answer["threshold"] = float(item.MeasuredValueSequence[0].NumericValue)
        elif code == "VERDICT":
            answer["verdict"] = item.ConceptCodeSequence[0].CodeMeaning
        elif code == "BODYPART":
            answer["body_part"] = item.TextValue
        elif code == "WARNING":
            answer["warnings"].append(item.TextValue)
        elif code == "MODEL":
            answer["model"] = item.TextValue
        elif code == "WEIGHTS":
            answer["weights_sha256"] = item.TextValue
        elif code == "IMAGE":
            answer["images"].append(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    return answer
