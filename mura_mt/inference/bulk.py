"""Bulk prediction over files: what ``scripts/predict.py`` runs and the benchmark measures.

Studies (lists of image files) are packed into batches of about ``batch_size`` images (the runtime's own size by
default) without splitting a study; each batch is ONE forward through ``Predictor.predict_studies``. With ONNX
Runtime, each of a thread per usable core decodes a batch and runs it on a one-thread session of its own; with
PyTorch (whose threads are the process's), one model runs on every core while threads decode the next batch. Both
write Grad-CAM overlays in the background. On 2 cores the first reaches 82 % of the rate the cores allow
(``mura_mt.bench.bulk``). An unreadable file becomes a row with its error, never a silent gap.
"""

from __future__ import annotations

import hashlib
import queue
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from mura_mt.hardware import usable_cores
from mura_mt.inference.explain import overlay
from mura_mt.imaging.io import InvalidImageError
from mura_mt.inference.predictor import Predictor, PreparedImage, StudyPrediction


def predict_files(
    predictor: Predictor,
    studies: dict[str, list[str]],
    body_part: str | None = None,
    cam_dir: Path | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """One row per file (study -> paths, in that order), with the view's and the study's answer or the error.
    ``batch_size``: images per forward (default: the runtime's own, ``runner.batch_size``)."""
    batch_size = batch_size or predictor.runner.batch_size
    workers = workers or usable_cores()  # more decoding threads than cores only fight for them (measured)
    order = list(studies)
    chunks = pack_studies(order, {s: len(studies[s]) for s in order}, batch_size)
    lanes = predictor.runner.single_threaded(workers) if workers > 1 else None
    rows: list[dict] = []
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,  # leaving it waits for the last overlay files
        tqdm(total=sum(len(v) for v in studies.values()), desc="predict", disable=not progress) as bar,
    ):
        if lanes:  # each worker decodes its chunk and runs it on a model of its own, one thread each
            free: queue.SimpleQueue[Predictor] = queue.SimpleQueue()
            for runner in lanes:
                free.put(Predictor(None, predictor.serving, ood=predictor.ood, runner=runner))
            done = [pool.submit(_lane_chunk, free, chunk, studies, body_part, cam_dir, pool) for chunk in chunks]
            for chunk, future in zip(chunks, done):
                rows += future.result()
                bar.update(sum(len(studies[s]) for s in chunk))
        else:  # one model on every core; threads decode the next chunk meanwhile
            for chunk, decoded in _prefetched(predictor, chunks, studies, pool):
                ready = {study: [future.result() for future in futures] for study, futures in decoded.items()}
                rows += _predict_chunk(predictor, chunk, ready, studies, body_part, cam_dir, pool)
                bar.update(sum(len(studies[s]) for s in chunk))
    return rows


def _lane_chunk(free: queue.SimpleQueue, chunk: list[str], studies: dict[str, list[str]], body_part: str | None,
                cam_dir: Path | None, pool: ThreadPoolExecutor) -> list[dict]:  # fmt: skip
    """A chunk decoded and answered in this thread, on the first free single-threaded Predictor."""
    predictor = free.get()
    try:
        decoded = {study: [_prepare(predictor, path) for path in studies[study]] for study in chunk}
        return _predict_chunk(predictor, chunk, decoded, studies, body_part, cam_dir, pool)
    finally:
        free.put(predictor)


def pack_studies(studies: list[str], sizes: dict[str, int], batch_size: int) -> list[list[str]]:
    """Consecutive studies in chunks of about ``batch_size`` images; a study is never split."""
    chunks, current, count = [], [], 0
    for study in studies:
        if current and count + sizes[study] > batch_size:
            chunks.append(current)
            current, count = [], 0
        current.append(study)
        count += sizes[study]
    return chunks + ([current] if current else [])


def _prepare(predictor: Predictor, path: str) -> PreparedImage | str:
    """The decoded, preprocessed image, or the reason it could not be read (reported, never skipped)."""
    try:
        return predictor.prepare(path)
    except InvalidImageError as err:
        return str(err)


def _prefetched(
    predictor: Predictor, chunks: list[list[str]], studies: dict[str, list[str]], pool: ThreadPoolExecutor
) -> Iterator[tuple[list[str], dict[str, list[Future]]]]:
    """Yield each chunk with its images being decoded; the next chunk's decoding starts before this one is used."""

    def submit(chunk: list[str]) -> dict[str, list[Future]]:
        return {study: [pool.submit(_prepare, predictor, path) for path in studies[study]] for study in chunk}

    pending = submit(chunks[0]) if chunks else {}
    for i, chunk in enumerate(chunks):
        current, pending = pending, (submit(chunks[i + 1]) if i + 1 < len(chunks) else {})
        yield chunk, current


def _predict_chunk(
    predictor: Predictor,
    chunk: list[str],
    decoded: dict[str, list[PreparedImage | str]],
    studies: dict[str, list[str]],
    body_part: str | None,
    cam_dir: Path | None,
    pool: ThreadPoolExecutor,
) -> list[dict]:
    """One forward for all readable views of the chunk's studies; rows in input order, errors included."""
    rows, readable = [], {}
    for study in chunk:
        items = list(zip(studies[study], decoded[study]))
        rows += [{"path": path, "study": study, "error": item} for path, item in items if isinstance(item, str)]
        good = [(path, item) for path, item in items if not isinstance(item, str)]
        if good:
            readable[study] = good
    if not readable:
        return rows
    results = predictor.predict_studies(
        [[item for _, item in views] for views in readable.values()], body_part, explain=cam_dir is not None
    )
    for (study, views), result in zip(readable.items(), results):
        rows += _study_rows(study, views, result)
        if cam_dir is not None:
            for (path, item), view in zip(views, result.views):
                to = cam_dir / overlay_name(path)
                pool.submit(lambda image=item.gray, heat=view.heatmap, to=to: overlay(image, heat).save(to))
    return rows


def overlay_name(path: str) -> str:
    """The overlay's file name: the image's last four path parts (MURA's part, patient, study, image), readable, and
    a digest of its whole path, unique (a MURA patient id spans body parts: patient/study/image alone collided)."""
    digest = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:8]
    return "_".join([*Path(path).with_suffix("").parts[-4:], digest]) + "_cam.png"


def _study_rows(study: str, views: list[tuple[str, PreparedImage]], result: StudyPrediction) -> list[dict]:
    return [
        {
            "path": path,
            "study": study,
            "body_part": result.body_part,
            "part_prob": result.part_probs[result.body_part],
            "abnormal_prob": view.abnormal_prob,
            "is_abnormal": view.is_abnormal,
            "study_abnormal_prob": result.abnormal_prob,
            "study_is_abnormal": result.is_abnormal,
            "gated_by": result.gated_by,
            "unlike_training": view.unlike_training,
            "warnings": " | ".join(view.warnings),
            "error": "",
        }
        for (path, _), view in zip(views, result.views)
    ]
