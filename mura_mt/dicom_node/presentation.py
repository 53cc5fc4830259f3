"""The mark on the radiograph itself, for viewers that read no SR: one Grayscale Softcopy Presentation State (GSPS,
highdicom) per analysed view that has a region of evidence, in one new series of the same study.

Each references its source view and carries, on one graphic layer ("MURA_MT"), the region's outline as a closed
POLYLINE in the view's pixel coordinates (the same points as the SR's SCOORD) and a short text in the top-left
corner ("mura-mt: abnormal 0.87, NOT FOR DIAGNOSTIC USE"). The view's own window (its first Window Center/Width) is
kept, so the radiograph looks as it did; a view without one is shown by the viewer's default. A PACS viewer that
applies presentation states shows the radiograph with the mark; the pixels are never changed. Validated by dciodvfy.
"""

from __future__ import annotations

from mura_mt.dicom_node.outputs import OWN_MANUFACTURER, ModelIdentity, equipment, source_header

PR_SERIES_DESCRIPTION = "mura-mt evidence region - NOT FOR DIAGNOSTIC USE"
PR_SERIES_NUMBER = 9903
LAYER = "MURA_MT"
CONTENT_LABEL = "MURA_MT_REGION"  # a Code String: capitals, digits, underscores


def caption(prediction) -> str:
    verdict = "abnormal" if prediction.is_abnormal else "normal"
    return f"mura-mt: {verdict} {prediction.abnormal_prob:.2f}, NOT FOR DIAGNOSTIC USE"


def presentation_states(views, result, model: ModelIdentity) -> list:
    """One GSPS per view of ``result`` with a region (``views``: their datasets, in the same order)."""
    import highdicom as hd
    import numpy as np
    from pydicom.uid import generate_uid

    series_uid = generate_uid()
    states = []
    for view, prediction in zip(views, result.views):
        if prediction.region is None:
            continue
        header = source_header(view)
        layer = hd.pr.GraphicLayer(layer_name=LAYER, order=1, description="mura-mt: where the evidence is")
        columns = float(view.Columns)
        text = hd.pr.TextObject(
            text_value=caption(prediction),
            units=hd.pr.AnnotationUnitsValues.PIXEL,
            bounding_box=(1.0, 1.0, max(2.0, min(columns - 1.0, columns * 0.9)), max(2.0, float(view.Rows) * 0.05)),
        )
        outline = hd.pr.GraphicObject(
            graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
            graphic_data=np.asarray(prediction.region, dtype=np.float64),
            units=hd.pr.AnnotationUnitsValues.PIXEL,
        )
        state = hd.pr.GrayscaleSoftcopyPresentationState(
            referenced_images=[header],
            series_instance_uid=series_uid,
            series_number=PR_SERIES_NUMBER,
            sop_instance_uid=generate_uid(),
            instance_number=len(states) + 1,
            manufacturer=OWN_MANUFACTURER,
            manufacturer_model_name=model.name[:64],
            software_versions=model.weights_sha256,
            device_serial_number=model.node_ae_title,
            content_label=CONTENT_LABEL,
            content_description=caption(prediction)[:64],
            graphic_annotations=[
                hd.pr.GraphicAnnotation(referenced_images=[header], graphic_layer=layer, graphic_objects=[outline],
                                        text_objects=[text])  # fmt: skip
            ],
            graphic_layers=[layer],
            contributing_equipment=equipment(model),
            **_window(view),
        )
        if "SpecificCharacterSet" in view:
            state.SpecificCharacterSet = view.SpecificCharacterSet
        state.SeriesDescription = PR_SERIES_DESCRIPTION
        state.Laterality = view.get("Laterality", "")  # Type 2C for paired body parts: the source's, or empty
        states.append(state)
    return states


def _window(view) -> dict:
    """The view's first window as the state's VOI LUT, when it has one (else the viewer's default applies)."""
    import highdicom as hd

    if "WindowCenter" not in view or "WindowWidth" not in view:
        return {}
    center, width = view.WindowCenter, view.WindowWidth
    center = float(center[0] if hasattr(center, "__len__") and not isinstance(center, str) else center)
    width = float(width[0] if hasattr(width, "__len__") and not isinstance(width, str) else width)
    return {"voi_lut_transformations": [hd.pr.SoftcopyVOILUTTransformation(window_center=center, window_width=width)]}
