"""Train/serve parity: the Predictor and evaluation make the same decision for every study, by one rule."""

import numpy as np
import pytest

from mura_mt.data import read_mura_index
from mura_mt.evaluation.evaluate import evaluate_checkpoint
from mura_mt.inference.calibration import Calibration
from mura_mt.inference.decision import decide
from mura_mt.inference.predictor import Predictor


def test_predict_study_equals_evaluation_for_every_valid_study(trained_run, synthetic_root):
    predictor = Predictor.from_pretrained(trained_run / "best")
    # The smoke run is too small to fit per-part calibration; give every part its own, so a path that skipped
    # calibration or used another part's threshold could not agree by accident.
    predictor.calibration = Calibration(
        scale=(0.5, 0.8, 1.2, 1.5, 0.9, 1.1, 0.7),
        bias=(-0.3, 0.2, 0.1, -0.1, 0.4, -0.2, 0.0),
        threshold=(0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65),
    )
    table = read_mura_index(synthetic_root, "valid")
    _, studies = evaluate_checkpoint(predictor, table, batch_size=7, progress=False)
    assert len(studies) == table["study_id"].nunique()
    for row in studies.itertuples():
        served = predictor.predict_study(table.loc[table["study_id"] == row.study_id, "path"].tolist())
        assert served.body_part == row.predicted_part, row.study_id
        assert served.abnormal_prob == pytest.approx(row.prob, abs=1e-5), row.study_id
        if abs(row.prob - served.threshold) > 1e-5:  # a tie at the threshold may fall either way in float
            assert served.is_abnormal == bool(row.pred), row.study_id


def test_the_rule_by_hand():
    """Mean part probabilities -> argmax -> that head's logit -> calibration -> mean over views -> threshold."""
    part_probs = np.array([[0.6, 0.4] + [0.0] * 5, [0.1, 0.9] + [0.0] * 5, [0.2, 0.8] + [0.0] * 5])
    logits = np.zeros((3, 7))
    logits[:, 0], logits[:, 1] = [3.0, 3.0, 3.0], [0.0, 2.0, -1.0]
    calibration = Calibration(scale=(1.0,) * 7, bias=(0.0, -1.0) + (0.0,) * 5, threshold=(0.5, 0.3) + (0.5,) * 5)
    decided = decide(part_probs, logits, np.array([0, 0, 1]), calibration)
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    assert decided.part_idx.tolist() == [1, 1]  # study 0: mean (0.35, 0.65) -> part 1, although view 0 says 0
    assert decided.view_probs == pytest.approx([sigmoid(-1.0), sigmoid(1.0), sigmoid(-2.0)])
    assert decided.probs == pytest.approx([(sigmoid(-1.0) + sigmoid(1.0)) / 2, sigmoid(-2.0)])
    assert decided.is_abnormal.tolist() == [True, False]  # against part 1's threshold 0.3
    given = decide(None, logits, np.array([0, 0, 1]), calibration, part_idx=np.array([0, 0]))
    assert given.probs == pytest.approx([sigmoid(3.0), sigmoid(3.0)])
