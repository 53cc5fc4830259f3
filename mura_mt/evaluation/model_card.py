"""The Hugging Face model card of a checkpoint: what it is for, what it was trained on, how well it does (with
confidence intervals when an evaluation report is given), how it preprocesses and decides, and what it gets
wrong. Built with huggingface_hub's ModelCard; reads a checkpoint's config.json and, optionally, the
metrics.json that ``scripts/evaluate.py --report`` wrote. Knows nothing about uploading.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from mura_mt.labels import BODY_PARTS

LIMITATIONS = """- **Not a medical device.** Research and education only; never use it to diagnose, triage or treat
  anyone.
- **Shortcut learning.** About half of MURA's abnormal studies show plates, screws, casts or other hardware;
  a model can learn to see the hardware rather than the pathology. Check the Grad-CAM overlays.
- **Label noise.** MURA's labels are per study, from the original radiology reports; single views of an
  abnormal study may look normal.
- **Population and equipment.** All images come from one hospital (Stanford); other scanners, protocols,
  children or other body parts are out of distribution. The app warns on images unlike the training data,
  but that warning is itself imperfect.
- **Body-part gate.** The predicted body part picks the anomaly head; a wrong part means a wrong head (the user
  may override it)."""


def build_model_card(config: dict[str, Any], repo_id: str, evaluation: dict[str, Any] | None = None) -> ModelCard:
    """The card for a checkpoint's ``config`` (config.json contents), to be published as ``repo_id``."""
    data = ModelCardData(
        license="other",
        library_name="pytorch",
        pipeline_tag="image-classification",
        tags=["medical-imaging", "radiology", "x-ray", "mura", "multi-task", "grad-cam", "timm"],
        base_model=None,
    )
    metrics = evaluation or config.get("metrics", {})
    evaluated_on = (evaluation or {}).get("source", {}).get("data", "a held-out split")
    source = (
        f"Evaluation on {evaluated_on} (`scripts/evaluate.py --report`)."
        if evaluation
        else f"The checkpoint's own validation numbers ({metrics.get('split', 'val')}; {metrics.get('decision', '')}). "
        "Evaluate on MURA's official valid split for numbers to quote."
    )
    if config.get("site_calibration"):
        source += (" These numbers are from the checkpoint's ORIGINAL calibration: its calibration, thresholds and "
                   "operating points were refitted at a site since (see \"Fitted at the site\").")  # fmt: skip
    preprocessing = config["preprocessing"]
    content = f"""---
{data.to_yaml()}
---

# {repo_id}

One timm {config["model"]["backbone"]} backbone shared by a 7-way body-part head and seven anomaly heads (one per
MURA body part); the predicted body part picks the head that decides normal/abnormal, and Captum's LayerGradCam
shows where it looked. Made with mura-mt (`{config.get("command", "")}`, git commit
`{config.get("git_sha") or "unknown"}`).

## Intended use

{config.get("intended_use", "Research and education. Not a medical device; not for diagnosis.")} It is meant for
machine-learning research on upper-extremity radiographs and for teaching; any clinical use is out of scope.

## Training data and its licence

{_training_data(config.get("train_config", {}).get("data", {}).get("kind", "mura"))}

## Metrics

{source}

{_metrics_table(metrics)}

## How it decides

- Body-part order (a contract of the weights): {", ".join(BODY_PARTS)}.
- Preprocessing: grayscale, longest side resized to {preprocessing["image_size"]} px and centred on black (letterbox),
  replicated to 3 channels, normalised with mean {_fmt_list(preprocessing["mean"])} and std
  {_fmt_list(preprocessing["std"])}.
- Decision: mean body-part probabilities over a study's views -> argmax (or the part the user gives) -> that
  part's anomaly logit of every view -> that part's Platt calibration -> mean over the views -> that part's
  threshold.

{_calibration_table(config.get("calibration", {}))}

{_ood_text(config.get("ood", {}))}

{_operating_points_text(config)}

{int8_section(config.get("onnx_int8"))}

## Known limitations

{LIMITATIONS}

## Use

```python
from mura_mt import Predictor

predictor = Predictor.from_pretrained("{repo_id}")
study = predictor.predict_study(["view1.png", "view2.dcm"], explain=True)
study.body_part, study.abnormal_prob, study.is_abnormal
```
"""
    return ModelCard(content)


def _training_data(kind: str) -> str:
    if kind == "synthetic":
        return (
            "**Synthetic radiographs** drawn by `mura_mt.data.synthetic` (seven drawn anatomies with fractures, "
            "hardware and lytic spots), in MURA's layout: no patient data, and no claim about real images. These "
            "weights demonstrate the tool; they are not a model of real radiographs."
        )
    if kind == "csv":
        return "The publisher's own radiographs, listed in a CSV; ask the publisher for their source and terms."
    return (
        "MURA v1.1 (Rajpurkar et al., 2017; Stanford ML Group): 40,561 upper-extremity radiographs in 14,863 "
        "studies, labelled normal/abnormal per study. MURA is distributed under the Stanford research use "
        "agreement after registration; it is **not** redistributed here, and weights trained on it inherit its "
        "research-only terms. The official train split was divided by patient into train and val; the official "
        "valid split is the test set."
    )


def _fmt_list(values) -> str:
    return "(" + ", ".join(f"{float(v):.3f}" for v in values) + ")"


def _cell(block: dict, key: str) -> str:
    value = block.get(key)
    if value is None:
        return "-"
    interval = block.get(f"{key}_ci95")
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else f"{value:.3f}"


def _metrics_table(metrics: dict) -> str:
    gate = metrics.get("predicted_gate")
    if not gate:
        return "No metrics recorded."
    keys = ("study_kappa", "study_auroc", "sensitivity", "specificity")
    lines = ["| body part | studies | kappa | study AUROC | sensitivity | specificity |", "|---|---|---|---|---|---|"]
    for part in (*BODY_PARTS, "overall"):
        if part in gate:
            block = gate[part]
            lines.append(
                f"| {part} | {block.get('n_studies', '-')} | " + " | ".join(_cell(block, k) for k in keys) + " |"
            )
    note = "Predicted gate (the body-part head picks the anomaly head, as in use)."
    if any(f"{k}_ci95" in gate.get("overall", {}) for k in keys):
        note += " Brackets: 95% bootstrap intervals over studies."
    return "\n".join([note, "", *lines, "", f"Body-part accuracy: {metrics.get('part_accuracy', float('nan')):.4f}."])


def _ood_text(ood: dict) -> str:
    if "thresholds" not in ood:
        return "- Out-of-distribution warning: none (this checkpoint carries no statistics for it)."
    return (
        '- Out-of-distribution warning ("looks unlike the images this model was trained on"): the larger of the '
        f"k-NN distance (k={ood['k']}, {ood['bank_size']} val images) of L2-normalised pooled features and the "
        "Mahalanobis distance of the first two stages' channel statistics, each over its threshold; thresholds "
        f"fitted so that {ood['val_false_alarm_rate']:.0%} of val images are flagged."
    )


INT8_HEADING = "## int8 on the CPU"


def int8_section(record: dict | None) -> str:
    """What the int8 graph's gate measured against fp32 PyTorch (config.json's ``onnx_int8``), as a card section."""
    if not record:
        return f"{INT8_HEADING}\n\nNone shipped: `--runtime auto` serves PyTorch or ONNX Runtime fp32."
    gate = record["accuracy"]
    rows = [
        ("body part agreement, images", gate["part_agreement"], gate["gate"]["part_agreement"]),
        ("study verdict agreement", gate["study_verdict_agreement"], gate["gate"]["study_verdict_agreement"]),
        *(
            (f"{name} fp32 / int8", f"{gate['fp32'][name]:.4f} / {gate['int8'][name]:.4f}", gate["gate"][name])
            for name in ("study_auroc", "study_kappa", "part_kappa")
        ),
        (
            "Grad-CAM cosine, worst abnormal view",
            gate["map_cosine_min_abnormal"],
            gate["gate"]["map_cosine_min_abnormal"],
        ),
        ("Grad-CAM maps with cosine < 0.98", gate["map_share_below_0.98"], gate["gate"]["map_share_below_0.98"]),
    ]
    if "warned_fp32" in gate:
        rows.append(("views warned unlike training, fp32 / int8", f"{gate['warned_fp32']} / {gate['warned_int8']}", ""))
    table = "\n".join(
        f"| {name} | {value:.4f} | {bound} |" if isinstance(value, float) else f"| {name} | {value} | {bound} |"
        for name, value, bound in rows
    )
    verdict = (
        "passed: `--runtime auto` serves it on x86 CPUs"
        if gate["passed"]
        else ("FAILED (" + "; ".join(gate["failures"]) + "): it is never served")
    )
    calibration, ood = record["calibration"], record.get("ood", {})
    thresholds = ood.get("thresholds", {})
    return f"""{INT8_HEADING}

`{record["file"]}`: static int8 ({calibration["weights"]}; activations {calibration["activations"]}), calibrated on
{calibration["images"]} {calibration["split"]} images. Gate on {gate["split"]} ({gate["views"]} views,
{gate["studies"]} studies), against fp32 PyTorch: **{verdict}**.

| figure | measured | bound |
|---|---|---|
{table}

Its "unlike the training images" warning was fitted on its own features of the val split (`{ood.get("file")}`:
thresholds k-NN {thresholds.get("knn", float("nan")):.4f} and style {thresholds.get("style", float("nan")):.4f}, flagging
{ood.get("val_false_alarm_rate", 0):.0%} of val)."""


def _operating_points_text(config: dict) -> str:
    """The triage groups' thresholds per part, and where they (and the calibration) were fitted."""
    points = config.get("operating_points")
    if not points:
        return '- Triage (operating points): none; answers carry no "likely normal" group.'
    rows = ["| body part | studies | abnormal | rule-out | rule-in | note |", "|---|---|---|---|---|---|"]
    for part, fitted in points.get("parts", {}).items():
        rule_out = "-" if fitted["rule_out"] is None else f"{fitted['rule_out']:.4f}"
        rule_in = "-" if fitted["rule_in"] is None else f"{fitted['rule_in']:.3f}"
        rows.append(f"| {part} | {fitted['n_studies']} | {fitted['n_abnormal']} | {rule_out} | {rule_in} | "
                    f"{fitted.get('why', '')} |")  # fmt: skip
    site_wide = points.get("site")
    if site_wide:
        rule_out = "-" if site_wide["rule_out"] is None else f"{site_wide['rule_out']:.4f}"
        rule_in = "-" if site_wide["rule_in"] is None else f"{site_wide['rule_in']:.3f}"
        rows.append(f"| **site-wide** | {site_wide['n_studies']} | {site_wide['n_abnormal']} | {rule_out} | {rule_in} | "
                    "every part together: used by a part without a point of its own |")  # fmt: skip
    first = next(iter(points.get("parts", {}).values()), {})
    lines = [
        "## Triage groups and their guarantee",
        "",
        f'{points.get("method", "")}. Below a part\'s rule-out a study is "likely normal": with probability at '
        f"least {first.get('confidence', 0.95):.0%} over the calibration studies, the sensitivity above it is at "
        f'least {first.get("sensitivity", 0.98):.0%}; at or above its rule-in, "likely abnormal" with a positive '
        f"predictive value of at least {first.get('ppv', 0.90):.0%}. This holds only while the studies that follow are "
        "like the calibration studies (the same site, mix and model). The site-wide point's guarantee is marginal: "
        "over studies with the calibration studies' mix of body parts, the sensitivity above its rule-out is at least "
        "the target with the stated confidence; it promises nothing about any one part.",
        "",
        *rows,
    ]
    site = config.get("site_calibration")
    if site:
        window = site.get("window") or {}
        span = f"received {window.get('since') or 'from the start'} to {window.get('until') or 'the fit'}"
        lines += [
            "",
            "### Fitted at the site",
            "",
            f"The calibration (refitted for: {', '.join(site['calibration_refitted_parts']) or 'no part'}), the "
            f"thresholds and the operating points were fitted on {site['n_studies_fit']} labelled studies of "
            f"{site['site']} ({span}; labels from {window.get('source', 'an evaluation folder')}) on {site['fitted']}, "
            f"labels sha256 {site['labels_sha256_fit'][:16]}...; {site['n_studies_heldout']} studies of other patients "
            f"were held out. The weights are those of sha256 {site['from_checkpoint_weights_sha256']}, unchanged.",
        ]
        heldout = site.get("heldout")
        if heldout:
            lines += ["", "| held out | kappa | study AUROC | sensitivity | specificity |", "|---|---|---|---|---|"]
            for name in ("before", "after"):
                block = heldout[name]["overall"]
                lines.append(f"| {name} | " + " | ".join(_cell(block, k) for k in
                             ("study_kappa", "study_auroc", "sensitivity", "specificity")) + " |")  # fmt: skip
    return "\n".join(lines)


def _calibration_table(calibration: dict) -> str:
    if not calibration:
        return ""
    lines = ["| body part | Platt scale | Platt bias | threshold |", "|---|---|---|---|"]
    for part in BODY_PARTS:
        c = calibration.get(part, {})
        lines.append(
            f"| {part} | {c.get('scale', 1.0):.3f} | {c.get('bias', 0.0):.3f} | {c.get('threshold', 0.5):.2f} |"
        )
    return "\n".join(lines)
