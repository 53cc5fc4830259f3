"""The answer as the reading room's software reads it: a TID 1500 Measurement Report (IHE AI Results), and reading
it back with highdicom alone.

One Measurement Group per analysed view and one for the study (tracking identifier ``study``), each with its
tracking UID, its source image(s), the finding site (the body part as a SNOMED CT code), the algorithm (TID 4019:
name, version, the weights' sha256 as a parameter), the abnormality probability as a NUM (Probability, DCM 122157)
in [0, 1] with the UCUM unit ``{0:1}``, the decision threshold (Threshold Value, DCM 122411), the verdict as a
qualitative evaluation of Normality (DCM 121402: SCT Abnormal or Normal), the triage group where the checkpoint has
operating points (a second qualitative evaluation in a private coding scheme), and each warning as a Comment a reader
sees. The observer is the node as a device, whose UID changes with the weights; the Image Library references every
analysed view. Validated by Pixelmed's DicomSRValidator and dciodvfy (tests/test_dicom_roundtrip.py).

Where the evidence is: each view whose Grad-CAM map has a single region (``inference.region``) also gets a TID 1410
planar ROI group (tracking identifier ``view N region``) whose SCOORD is that region's closed POLYLINE in the source
image's pixel coordinates, so that a viewer (OHIF) draws it over the radiograph. Its finding type says what it is:
the region the model's evidence comes from (a private code: DICOM has none), found by Gradient-weighted class
activation (DCM 130403), NOT a delineated lesion; it carries the view's finding site, probability, threshold and
verdict. A view without a single region says so in a Comment of its image group.
"""

from __future__ import annotations

from mura_mt.dicom_node.outputs import OWN_MANUFACTURER, ModelIdentity, equipment, source_header

SR_SERIES_DESCRIPTION = "mura-mt triage result - NOT FOR DIAGNOSTIC USE"
SR_SERIES_NUMBER = 9902
STUDY_GROUP = "study"  # the tracking identifier of the study's group; the views' are "view 1", "view 2", ...
# SNOMED CT codes of the seven MURA body parts (pydicom's codes.SCT keywords)
FINDING_SITES = {
    "elbow": "ElbowJoint",
    "finger": "Finger",
    "forearm": "Forearm",
    "hand": "Hand",
    "humerus": "Humerus",
    "shoulder": "Shoulder",
    "wrist": "WristJoint",
}
PROJECTION_DESCRIPTORS = ("PatientOrientation", "ImagerPixelSpacing")
# The triage group by the checkpoint's operating points has no code in DICOM or SNOMED CT: a private coding scheme
# ("99" prefix, PS3.16 8.2), declared in the report's Coding Scheme Identification Sequence.
PRIVATE_SCHEME = "99MURAMT"
TRIAGE_CONCEPT = ("TRIAGE", "Triage group by operating points")
TRIAGE_BASIS_CONCEPT = ("TRIAGEBASIS", "Operating point behind the triage group")
TRIAGE_VALUES = {"likely normal": "LIKELYNORMAL", "uncertain": "UNCERTAIN", "likely abnormal": "LIKELYABNORMAL"}
EVIDENCE_CONCEPT = ("EVIDENCEREGION", "Region of the model's evidence, not a delineated lesion")
REGION_SUFFIX = " region"  # a view's ROI group is tracked as "view N region"
NO_REGION = ("No single region of evidence: the Grad-CAM map is flat or spread over most of the image, so no "
             "outline is given")  # fmt: skip


def _unit_interval():
    from pydicom.sr.coding import Code

    return Code("{0:1}", "UCUM", "range: 0:1")


def _answer_items(identifier: str, body_part: str, prediction, algorithm) -> dict:
    """What every group says of its view or study: tracking, algorithm, finding site, probability, threshold and
    verdict (as the keyword arguments of highdicom's group templates)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    verdict = codes.SCT.Abnormal if prediction.is_abnormal else codes.SCT.Normal
    return {
        "tracking_identifier": hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=identifier),
        "algorithm_id": algorithm,
        "finding_sites": [hd.sr.FindingSite(getattr(codes.SCT, FINDING_SITES[body_part]))],
        "measurements": [
            hd.sr.Measurement(codes.DCM.Probability, float(prediction.abnormal_prob), _unit_interval()),
            hd.sr.Measurement(codes.DCM.ThresholdValue, float(prediction.threshold), _unit_interval()),
        ],
        "qualitative_evaluations": [hd.sr.QualitativeEvaluation(codes.DCM.Normality, verdict)],
    }


def _group(identifier: str, views, body_part: str, prediction, warnings: list[str], algorithm):
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    items = _answer_items(identifier, body_part, prediction, algorithm)
    items["qualitative_evaluations"] += _triage(prediction)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        source_images=[hd.sr.SourceImageForMeasurementGroup(v.SOPClassUID, v.SOPInstanceUID) for v in views], **items
    )
    for warning in warnings:  # free text a reader sees beside the verdict
        group[0].ContentSequence.append(hd.sr.TextContentItem(codes.DCM.Comment, warning, relationship_type="CONTAINS"))
    basis = getattr(prediction, "triage_basis", None)
    if basis is not None:  # whose guarantee stands behind "likely ...": the part's own operating point, or site-wide
        whose = ("the site-wide operating point (a guarantee over the site's mix of body parts, not for this part "
                 "alone)" if basis == "site-wide" else f"the {basis} operating point")  # fmt: skip
        concept = Code(TRIAGE_BASIS_CONCEPT[0], PRIVATE_SCHEME, TRIAGE_BASIS_CONCEPT[1])
        group[0].ContentSequence.append(hd.sr.TextContentItem(
            concept, f"{prediction.triage} by {whose}", relationship_type="CONTAINS"))  # fmt: skip
    return group


def _region_group(identifier: str, view, body_part: str, prediction, algorithm):
    """The TID 1410 group that outlines where a view's evidence is (see the module)."""
    import highdicom as hd
    import numpy as np
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.asarray(prediction.region, dtype=np.float64),
        source_image=hd.sr.SourceImageForRegion(view.SOPClassUID, view.SOPInstanceUID),
    )
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        referenced_region=region,
        finding_type=Code(EVIDENCE_CONCEPT[0], PRIVATE_SCHEME, EVIDENCE_CONCEPT[1]),
        method=codes.DCM.GradientWeightedClassActivation,
        **_answer_items(identifier + REGION_SUFFIX, body_part, prediction, algorithm),
    )
    for item in group[0].ContentSequence:  # highdicom 0.28 writes CONTAINS; TID 1410 row 5 is HAS CONCEPT MOD
        if _code(item) == "370129005":  # Measurement Method (SCT)
            item.RelationshipType = "HAS CONCEPT MOD"
    return group


def _triage(prediction) -> list:
    """The triage group as a second qualitative evaluation; none when the checkpoint has no operating points."""
    import highdicom as hd
    from pydicom.sr.coding import Code

    if getattr(prediction, "triage", None) is None:
        return []
    name = Code(TRIAGE_CONCEPT[0], PRIVATE_SCHEME, TRIAGE_CONCEPT[1])
    value = Code(TRIAGE_VALUES[prediction.triage], PRIVATE_SCHEME, prediction.triage)
    return [hd.sr.QualitativeEvaluation(name, value)]


def _library_entry(view):
    """What the Image Library describes of a view. highdicom's projection-radiography descriptors (TID 1603) need
    the view's orientation and imager pixel spacing; a view that lacks either is still referenced, with the
    descriptors every image has (modality, rows, columns) and none invented."""
    header = source_header(view)
    if not all(keyword in view for keyword in PROJECTION_DESCRIPTORS):
        header.Modality = ""  # highdicom adds TID 1603 only for projection modalities
    return header


def structured_report(views, result, warnings: list[str], model: ModelIdentity):
    """The TID 1500 Measurement Report of one answered study. ``warnings`` are the study's (the Predictor's and the
    node's own); each view's group carries that view's.

    A Comprehensive SR (88.33), not a Comprehensive 3D SR: its regions are 2-D image coordinates (SCOORD), which
    88.33 carries, and Orthanc's Stone viewer reads TID 1500 only from 88.33 (both classes carry the same
    template)."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    algorithm = hd.sr.AlgorithmIdentification(
        name=model.name, version=model.version, parameters=[f"weights sha256 {model.weights_sha256}"]
    )
    observer = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=model.device_uid, name=model.node_ae_title, manufacturer_name=OWN_MANUFACTURER, model_name=model.name
    )
    # The regions first: a viewer opens a report on its first group (OHIF's SR viewport does), and the first that
    # outlines something shows the radiograph with its mark.
    regions, groups = [], []
    for number, (view, prediction) in enumerate(zip(views, result.views), start=1):
        region = prediction.region
        said = list(prediction.warnings) + ([NO_REGION] if region is None else [])
        groups.append(_group(f"view {number}", [view], result.body_part, prediction, said, algorithm))
        if region is not None:
            regions.append(_region_group(f"view {number}", view, result.body_part, prediction, algorithm))
    groups = [*regions, *groups, _group(STUDY_GROUP, views, result.body_part, result, warnings, algorithm)]
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(codes.DCM.Device, observer)
        ),
        procedure_reported=codes.SCT.ImagingProcedure,  # in the CID 100 that Pixelmed and older viewers know
        imaging_measurements=groups,
        referenced_images=[_library_entry(view) for view in views],
    )
    report = hd.sr.ComprehensiveSR(
        evidence=[source_header(view) for view in views],
        content=content[0],
        series_instance_uid=generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=OWN_MANUFACTURER,
        is_complete=True,
        contributing_equipment=equipment(model),
    )
    if "SpecificCharacterSet" in views[0]:
        report.SpecificCharacterSet = views[0].SpecificCharacterSet
    report.SeriesDescription = SR_SERIES_DESCRIPTION
    if result.triage is not None:
        scheme = pydicom.Dataset()
        scheme.CodingSchemeDesignator = PRIVATE_SCHEME
        scheme.CodingSchemeName = "mura-mt triage groups"
        scheme.CodingSchemeResponsibleOrganization = OWN_MANUFACTURER
        report.CodingSchemeIdentificationSequence = [*report.get("CodingSchemeIdentificationSequence", []), scheme]
    return report


def read_report(report) -> dict:
    """The answer back out of a TID 1500 report (a dataset or a path), with highdicom's template classes: the
    study's ``abnormal_prob``, ``threshold``, ``verdict`` ("abnormal" / "normal"), ``triage`` (or None),
    ``body_part``, ``warnings``,
    ``images`` (SOP Instance UIDs), the ``model``, ``weights_sha256`` and ``device_uid``, and ``views``: the same per
    view, in order, each with its ``region`` (outline, image, finding_type; None when the view has none)."""
    import highdicom as hd
    import pydicom

    dataset = report if isinstance(report, pydicom.Dataset) else pydicom.dcmread(report)
    content = hd.sr.ComprehensiveSR.from_dataset(dataset).content
    groups = {str(g.tracking_identifier): _read_group(g) for g in content.get_image_measurement_groups()}
    regions = {str(g.tracking_identifier): _read_region(g) for g in content.get_planar_roi_measurement_groups()}
    study = groups.pop(STUDY_GROUP)
    for identifier, group in groups.items():
        group["region"] = regions.get(identifier + REGION_SUFFIX)
    device = content.get_observer_contexts()[0].observer_identifying_attributes
    return {**study, "device_uid": str(device.uid), "views": list(groups.values())}


def _read_group(group) -> dict:
    from pydicom.sr.codedict import codes

    def measured(name) -> float:
        return float(group.get_measurements(name=name)[0].value)

    def texts(name) -> list[str]:
        return [item.TextValue for item in group[0].ContentSequence if _code(item) == name.value]

    from pydicom.sr.coding import Code

    triage_name = Code(TRIAGE_CONCEPT[0], PRIVATE_SCHEME, TRIAGE_CONCEPT[1])
    parts = {getattr(codes.SCT, keyword).value: part for part, keyword in FINDING_SITES.items()}
    parameters = texts(codes.DCM.AlgorithmParameters)
    return {
        "abnormal_prob": measured(codes.DCM.Probability),
        "threshold": measured(codes.DCM.ThresholdValue),
        "verdict": group.get_qualitative_evaluations(name=codes.DCM.Normality)[0].value.meaning.lower(),
        "triage": next((str(e.value.meaning) for e in group.get_qualitative_evaluations(name=triage_name)), None),
        "body_part": parts[group.finding_sites[0].value.value],
        "warnings": [text for text in texts(codes.DCM.Comment) if text != NO_REGION],
        "no_region_said": NO_REGION in texts(codes.DCM.Comment),
        "images": [image.referenced_sop_instance_uid for image in group.source_images],
        "model": next(iter(texts(codes.DCM.AlgorithmName)), None),
        "weights_sha256": parameters[0].removeprefix("weights sha256 ") if parameters else None,
    }


def _read_region(group) -> dict:
    """A view's region group: its outline ([[x, y], ...]), the image it outlines, and its finding type's meaning."""
    region = group.roi  # an ImageRegion: the SCOORD, SELECTED FROM its source image
    return {
        "outline": region.value.tolist(),
        "image": region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID,
        "finding_type": str(group.finding_type.meaning),
    }


def _code(item) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeValue)
