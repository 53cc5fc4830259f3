"""The upload tab: radiographs of one study in, the verdict, body part, Grad-CAM overlays and JSON out; and the
API endpoints behind it, ``/predict_study`` (the Analyze button) and ``/predict`` (one image, API only). Their
docstrings are the MCP tools' descriptions.

Files go to the Predictor as paths, decoded by the project's own loader (never by gr.Image, which clips 16-bit
data), and its StudyPrediction is mapped to widgets; no tensors here. Several requests run at once: decoding,
overlay drawing and PNG encoding of one overlap with another's model call, and the Predictor serialises only the
model call itself. An analysis longer than ``time_limit`` seconds is answered with a clean error.
"""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import gradio as gr

from mura_mt.access.gate import Access
from mura_mt.access.roles import ANALYSE
from mura_mt.imaging.io import InvalidImageError, load_radiograph
from mura_mt.inference.explain import overlay
from mura_mt.inference.region import outlined
from mura_mt.inference.operating_points import OperatingPoints
from mura_mt.inference.predictor import Predictor, StudyPrediction
from mura_mt.labels import BODY_PARTS
from mura_mt.web.login import WebAccess
from mura_mt.web.pictures import PictureFiles
from mura_mt.web.zerogpu import on_gpu, on_zero_gpu

FILE_TYPES = [".png", ".jpg", ".jpeg", ".dcm"]
MAX_VIEWS = 12
HOW_TO_READ = """**How to read this.** The body-part model names the part it sees; that part's abnormality
head gives the probability, compared with the part's threshold (fitted on validation data). *Decided by* says whether
the predicted part or the part you chose picked the head. The Grad-CAM overlay shows where that head found its
evidence: warm colours push towards *abnormal*; the yellow outline on the original encloses where that evidence is
strongest (the map above half its maximum, around its peak): where the model looked, not a lesion anyone
delineated. A study's probability is the mean over its views. Warnings stand above the verdict: an image unlike the training images (another body region, a CT or MR slice, a photo, or for the
bundled demo any real radiograph) gets an answer that is not reliable; an uncertain body part means you should
choose the part yourself. A checkpoint with operating points also sorts the study: *likely normal* (below a threshold
that kept the sensitivity at its target, with stated confidence, on the studies it was fitted on), *likely abnormal*
or *uncertain*."""


class UploadTab:
    """The tab's handlers around one Predictor, ``concurrency`` analyses at a time, each cut off after
    ``time_limit`` seconds. ``render`` lays out the tab and its /predict_study; ``render_api`` adds /predict."""

    def __init__(self, predictor: Predictor, concurrency: int, time_limit: float, access: WebAccess | None = None):
        """``access``: who may analyse (every role but ``monitor``); without it, everyone."""
        self.concurrency = concurrency
        self.time_limit = time_limit
        self.pictures = PictureFiles()
        # The analyses run here, so a request can stop waiting for one that is too slow; the thread finishes it in
        # the background (Python cannot stop it), and the Predictor's lock makes later requests wait their turn.
        self._analyses = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="analysis")
        self._analyse = on_gpu(
            lambda images, body_part, explain: predictor.predict_study(images, body_part, explain=explain), time_limit
        )
        self.predict_study, self.predict = _endpoints(self._guarded, self.pictures, predictor.serving.operating_points,
                                                      access or WebAccess(Access()))  # fmt: skip

    def _guarded(self, images, body_part: str, explain: bool) -> StudyPrediction:
        # The request's context goes along: ZeroGPU reads the Gradio request from it to schedule a GPU.
        future = self._analyses.submit(contextvars.copy_context().run, self._analyse, images, body_part, explain)
        try:
            return future.result(timeout=self.time_limit)
        except FutureTimeout:
            raise gr.Error(
                f"The analysis took longer than {self.time_limit:g} s and was stopped; please try again later."
            ) from None
        except (InvalidImageError, ValueError) as err:
            raise gr.Error(str(err)) from None

    def render(self, examples: list[str] | None = None, cache_examples: bool = True) -> None:
        """The tab's layout and /predict_study. ``examples`` are answered at launch (``cache_examples``) so that
        clicking one shows its result at once."""
        # The outputs exist before the examples (which need them to cache their answers) but show on the right.
        verdict = gr.Markdown(label="verdict", elem_id="verdict", render=False)
        part_probs = gr.Label(num_top_classes=3, label="Body part", elem_id="part-probs", render=False)
        gallery = gr.Gallery(
            label="Views and Grad-CAM overlays",
            columns=2,
            height="auto",
            format="png",
            elem_id="overlays",
            render=False,
        )
        details = gr.JSON(label="study result", elem_id="details", render=False)
        outputs = [details, gallery, verdict, part_probs]
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=280):
                files = gr.File(
                    label="Radiographs of one study (PNG, JPEG or DICOM)",
                    file_count="multiple",
                    file_types=FILE_TYPES,
                    type="filepath",
                    elem_id="upload",
                )
                part = gr.Dropdown(
                    ["auto", *BODY_PARTS],
                    value="auto",
                    label="Body part",
                    elem_id="body-part",
                    info="auto: the body-part head decides which anomaly head answers",
                )
                explain = gr.Checkbox(value=True, label="Show Grad-CAM explanation", elem_id="explain")
                run = gr.Button("Analyze", variant="primary", elem_id="analyze")
                if examples:
                    # Answered once at start-up, so a click on an example shows its result at once.
                    gr.Examples(
                        [[[path], "auto", True] for path in examples],
                        [files, part, explain],
                        outputs,
                        fn=self.predict_study,
                        cache_examples=cache_examples,
                        # ZeroGPU attaches a GPU to requests only, so there the first click fills the cache.
                        cache_mode="lazy" if on_zero_gpu() else "eager",
                        label="Examples (synthetic radiographs)",
                        api_visibility="private",
                        elem_id="examples",
                    )
            with gr.Column(scale=2, min_width=320):
                verdict.render()
                part_probs.render()
                gallery.render()
                with gr.Accordion("Details (JSON)", open=False):
                    details.render()
        gr.Markdown(HOW_TO_READ)
        run.click(
            self.predict_study,
            [files, part, explain],
            outputs,
            api_name="predict_study",
            concurrency_limit=self.concurrency,
        )

    def render_api(self) -> None:
        """/predict: one image, API only (its components are invisible)."""
        with gr.Column(visible=False):
            single_file = gr.File(type="filepath", file_types=FILE_TYPES)
            single_part = gr.Dropdown(["auto", *BODY_PARTS], value="auto")
            single_explain = gr.Checkbox(value=True)
            single_json = gr.JSON(label="result")
            single_image = gr.Image(label="overlay", format="png", type="filepath")
            gr.Button().click(
                self.predict,
                [single_file, single_part, single_explain],
                [single_json, single_image],
                api_name="predict",
                concurrency_limit=self.concurrency,
            )


def _endpoints(guarded, pictures: PictureFiles, operating_points: OperatingPoints | None, access: WebAccess):
    """/predict_study and /predict as closures over the guarded analysis: Gradio reads their names, signatures and
    docstrings (the MCP tools' descriptions). The request (not part of the API) says who asks; ``None`` is the app
    itself, answering its examples at start-up."""

    def allowed(request: gr.Request | None) -> None:
        if request is not None:
            access.require(request, ANALYSE, "the analysis of images")

    def predict_study(files, body_part: str, explain: bool, request: gr.Request = None) -> tuple[dict, list, str, dict]:
        """Screen ONE radiograph study (several views of one body part of one patient) for musculoskeletal
        abnormality with a model trained on MURA-style upper-extremity radiographs (elbow, finger, forearm, hand,
        humerus, shoulder, wrist). A research tool, not a diagnosis: never present its answer as a medical
        finding. Read `warnings` first: "looks unlike the images this model was trained on" means the answer is
        not reliable (another body region, a CT, MR or photo, or any real radiograph for the synthetic demo).

        Args:
            files: one to 12 radiographs of the same study (PNG, JPEG or DICOM files).
            body_part: "auto" (the model names the part) or one of elbow, finger, forearm, hand, humerus, shoulder,
                wrist to make that part's head decide.
            explain: whether to compute a Grad-CAM overlay for every view (slower).

        Returns:
            study_result: body_part, part_probs, gated_by, abnormal_prob, threshold, is_abnormal, warnings,
                unlike_training (above 1: unlike the training images), triage ("likely normal", "uncertain" or
                "likely abnormal" by the checkpoint's operating points; null without them), triage_basis (whose
                guarantee: the body part's own point or "site-wide") and the same for each view, each with its
                region: where its Grad-CAM evidence is, a closed outline [[x, y], ...] in the image's pixels (null
                without explain or when the map has no single region; not a delineated lesion).
            views_and_gradcam_overlays: each view, then its overlay when explain is on.
            verdict: the verdict in words, warnings first.
            body_part_probabilities: the study's body-part probabilities.
        """
        allowed(request)
        paths = _paths(files)
        images = [_load(path) for path in paths]
        result = guarded(images, body_part, explain)
        gallery = []
        for path, image, view in zip(paths, images, result.views):
            name = Path(path).name
            if view.region is not None:
                gallery.append((pictures.write(outlined(image, view.region)), f"{name}: evidence region outlined"))
            else:
                gallery.append((pictures.write(image), f"{name}: original"))
            if view.heatmap is not None:
                shown = overlay(image, view.heatmap)
                gallery.append((pictures.write(shown), f"{name}: Grad-CAM, p={view.abnormal_prob:.2f}"))
        return result.to_dict(), gallery, verdict_markdown(result, operating_points), result.part_probs

    def predict(file, body_part: str, explain: bool, request: gr.Request = None):
        """Screen ONE upper-extremity radiograph for musculoskeletal abnormality with a model trained on
        MURA-style radiographs (elbow, finger, forearm, hand, humerus, shoulder, wrist). A research tool, not a
        diagnosis: never present its answer as a medical finding. Read `warnings` first: "looks unlike the images
        this model was trained on" means the answer is not reliable.

        Args:
            file: a radiograph (PNG, JPEG or DICOM file).
            body_part: "auto" (the model names the part) or one of elbow, finger, forearm, hand, humerus, shoulder,
                wrist to make that part's head decide.
            explain: whether to compute the Grad-CAM overlay (slower).

        Returns:
            result: body_part, part_probs, gated_by, abnormal_prob, threshold, is_abnormal, warnings,
                unlike_training (above 1: unlike the training images), triage (null without operating points),
                triage_basis (the body part's own point or "site-wide") and region (where the Grad-CAM evidence is:
                a closed outline [[x, y], ...] in the image's pixels; null without explain or a single region).
            overlay: the Grad-CAM overlay as a PNG (the image itself when explain is off).
        """
        allowed(request)
        image = _load(_paths(file)[0])
        result = guarded([image], body_part, explain).views[0]
        shown = overlay(image, result.heatmap) if result.heatmap is not None else image
        return result.to_dict(), pictures.write(shown)

    return predict_study, predict


def _paths(files) -> list[str]:
    if not files:
        raise gr.Error("Upload at least one radiograph (PNG, JPEG or DICOM).")
    items = files if isinstance(files, list) else [files]
    paths = [item if isinstance(item, str) else getattr(item, "path", None) or item["path"] for item in items]
    if len(paths) > MAX_VIEWS:
        raise gr.Error(f"A study has at most {MAX_VIEWS} views; {len(paths)} were uploaded.")
    return paths


def _load(path: str):
    try:
        return load_radiograph(path)
    except InvalidImageError as err:
        raise gr.Error(f"{Path(path).name}: {err}") from None


def verdict_markdown(result: StudyPrediction, operating_points: OperatingPoints | None = None) -> str:
    """The verdict in words, then the triage group and what it promises. Warnings first: one that says the answer
    is not reliable must be read before the answer."""
    label = "ABNORMAL" if result.is_abnormal else "NORMAL"
    decided = "the predicted body part" if result.gated_by == "predicted" else "the body part you chose"
    lines = [f"> ⚠️ **{warning}**" for warning in result.warnings]
    lines += [
        f"## {label}: abnormality probability {result.abnormal_prob:.2f} (threshold {result.threshold:.2f})",
        f"Decided by the **{result.body_part}** head, picked by {decided}; {len(result.views)} view(s).",
    ]
    if result.triage is not None and operating_points is not None:
        demoted = operating_points.triage(result.body_part, result.abnormal_prob) != result.triage
        why = ("below the rule-out threshold, but a study with a warning is never set aside as likely normal"
               if demoted else operating_points.meaning(result.body_part, result.triage))  # fmt: skip
        lines.append(f"Triage: **{result.triage}**: {why}.")
    return "\n\n".join(lines)
