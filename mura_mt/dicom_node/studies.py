"""Studies: when a study is complete enough to answer, and the answer. The Predictor does the work.

A study is analysed once no instance has arrived for ``quiet_seconds``. Only projection radiographs (CR and DX) are
analysed; a study with none is "skipped", with the modalities it held. The views are decoded by the project's own
loader (every transfer syntax pynetdicom receives; MONOCHROME1 inverted) and answered with
``Predictor.predict_study(..., explain=True)``. Where BodyPartExamined names one of the seven parts and the model
sees another, the answer carries a warning (the model's part still gates, as in the app). The SC and SR are written
durably to the outbox and queued for delivery in the same transaction that stores the answer; a new instance that
arrives meanwhile discards the answer, and the study is analysed again with it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from mura_mt.dicom_node.files import object_path, write_durably
from mura_mt.dicom_node.loop import PassLoop
from mura_mt.dicom_node.outputs import ModelIdentity, secondary_captures
from mura_mt.dicom_node.presentation import presentation_states
from mura_mt.dicom_node.sr import structured_report
from mura_mt.dicom_node.store import WorklistStore
from mura_mt.imaging.io import InvalidImageError, load_radiograph
from mura_mt.inference.operating_points import with_warnings
from mura_mt.labels import BODY_PART_TERMS

logger = logging.getLogger(__name__)

PROJECTION_MODALITIES = ("CR", "DX")
PROJECTION_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.1",  # CR Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image Storage - For Processing
)
PART_OF_TERM = {term: part for part, term in BODY_PART_TERMS.items()}


def is_radiograph(instance: dict) -> bool:
    """A projection radiograph (CR or DX), by modality or by SOP class: what the model may analyse."""
    return instance["modality"] in PROJECTION_MODALITIES or instance["sop_class"] in PROJECTION_SOP_CLASSES


def body_part_warning(examined: list[str], seen: str) -> str | None:
    """A warning when the images' BodyPartExamined names one of the seven parts and the model sees another."""
    named = {PART_OF_TERM[t.upper()] for t in examined if t and t.upper() in PART_OF_TERM}
    if named and seen not in named:
        return (
            f"The images are labelled {', '.join(sorted(named))} (BodyPartExamined), but the model sees a {seen}; "
            f"the {seen} head decided."
        )
    return None


class StudyWorker(PassLoop):
    """Finds quiet studies and answers them; ``run_once`` is one pass (the thread calls it every ``poll`` s)."""

    name = "mura-mt-studies"

    def __init__(self, store: WorklistStore, predictor, model: ModelIdentity, outbox: str | Path,
                 destinations: list[str], quiet_seconds: float = 10.0, poll: float = 0.1,
                 on_answer=None, metrics=None, presentation_states: bool = True):  # fmt: skip
        super().__init__()
        self.metrics = metrics  # a monitoring.SiteMetrics that times each analysis
        self.store, self.predictor, self.model = store, predictor, model
        self.on_answer = on_answer  # called after an answer is queued (the deliverer wakes instead of polling)
        self.outbox = Path(outbox)
        self.destinations = destinations
        self.quiet_seconds, self.poll = quiet_seconds, poll
        self.presentation_states = presentation_states

    def warm_up(self) -> None:
        """Pay the first study's one-off costs (fonts, highdicom's imports, the model's first call) at start-up:
        measured 0.74 s for the first answer against 0.03 s for the next."""
        from PIL import Image

        from mura_mt.dicom_node.outputs import annotated_view, banner_lines

        gray = Image.new("L", (256, 256), 40)
        result = self.predictor.predict_study([gray], explain=True)
        annotated_view(gray, result.views[0].heatmap, banner_lines(result, []))
        import highdicom.sc  # noqa: F401
        import highdicom.pr  # noqa: F401
        import highdicom.sr  # noqa: F401

    def split_after(self) -> float:
        """How long a study whose views no single node holds waits for the rest before it is failed."""
        return max(60.0, 6 * self.quiet_seconds)

    def run_once(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        done = []
        for study in self.store.split_studies(now - self.split_after()):
            # Nobody can answer it: say so in the worklist, rather than leave it "in progress" for ever.
            if self.store.claim(study["study_uid"], study["last_instance"], now=now):
                held = ", ".join(f"{node} {n}" for node, n in study["held"].items())
                self.store.record_outcome(
                    study["study_uid"], study["last_instance"], "failed",
                    f"its {study['views']} views are split between nodes ({held}) and none holds them all; "
                    "route each study to one node, or to every node",
                )  # fmt: skip
                done.append(study["study_uid"])
        for study in self.store.quiet_studies(now - self.quiet_seconds):
            if not self.store.claim(study["study_uid"], study["last_instance"]):
                continue
            try:
                started = time.monotonic()
                self.answer(study)
                if self.metrics is not None:
                    self.metrics.analysis_seconds.observe(time.monotonic() - started)
            except Exception as err:  # this study is marked failed, with why; the others go on
                logger.exception("a study could not be answered")
                self.store.record_outcome(
                    study["study_uid"], study["last_instance"], "failed", f"{type(err).__name__}: {str(err)[:300]}"
                )
            done.append(study["study_uid"])
        return done

    def answer(self, study: dict) -> None:
        import pydicom

        uid, stamp = study["study_uid"], study["last_instance"]
        instances = self.store.instances(uid)
        radiographs = [i for i in instances if is_radiograph(i)]
        if not radiographs:
            held = sorted({i["modality"] or "unknown" for i in instances})
            self.store.record_outcome(uid, stamp, "skipped", f"no projection radiograph (CR or DX); held: {held}")
            logger.info(f"skipped a study without projection radiographs ({held})")
            return
        deleted = [i for i in radiographs if not i["path"]]
        if deleted:
            self.store.record_outcome(
                uid,
                stamp,
                "failed",
                f"{len(deleted)} earlier view(s) were deleted after --retain-hours; send them again",
            )
            return
        try:
            views = [pydicom.dcmread(i["path"]) for i in radiographs]
            grays = [load_radiograph(i["path"]) for i in radiographs]
        except (InvalidImageError, OSError) as err:
            self.store.record_outcome(uid, stamp, "failed", f"a view could not be read: {err}")
            return
        result = self.predictor.predict_study(grays, explain=True)
        warnings = list(result.warnings)
        mismatch = body_part_warning([i["body_part"] for i in radiographs], result.body_part)
        if mismatch:
            warnings.append(mismatch)
            # the node's own warning counts as the Predictor's do: a warned study is never "likely normal"
            result = dataclasses.replace(result, triage=with_warnings(result.triage, warnings))
        objects = [*secondary_captures(views, grays, result, warnings, self.model),
                   structured_report(views, result, warnings, self.model)]  # fmt: skip
        if self.presentation_states:
            objects += presentation_states(views, result, self.model)
        outputs = []
        for dataset in objects:
            path = object_path(self.outbox, uid, str(dataset.SOPInstanceUID))
            buffer = _encode(dataset)
            outputs.append((str(dataset.SOPInstanceUID), str(write_durably(path, buffer))))
        answer = {
            "body_part": result.body_part,
            "abnormal_prob": float(result.abnormal_prob),
            "is_abnormal": bool(result.is_abnormal),
            "triage": result.triage,
            "warnings": warnings,
            "result": _without_regions({**result.to_dict(), "warnings": warnings}),
        }
        if not self.store.record_answer(uid, stamp, answer, outputs, self.destinations):
            for _, path in outputs:  # a new view arrived meanwhile: this answer is stale
                Path(path).unlink(missing_ok=True)
        elif self.on_answer is not None:
            self.on_answer()


def _without_regions(answer: dict) -> dict:
    """The answer as the store keeps it: the views' outlines live in the SR and the presentation states (a hundred
    points a view would triple a year's store)."""
    return {**answer, "views": [{k: v for k, v in view.items() if k != "region"} for view in answer["views"]]}


def _encode(dataset) -> bytes:
    import io

    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
