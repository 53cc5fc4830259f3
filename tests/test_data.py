import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mura_mt.data import MuraIndexError, read_csv_index, read_mura_index, split_by_patient
from mura_mt.labels import BODY_PARTS


def _lines(path):
    return [line for line in path.read_text().splitlines() if line.strip()]


def test_headerless_csv_keeps_every_row(synthetic_root):
    """The official CSVs have no header: every line is a study, including the first."""
    mura = synthetic_root / "MURA-v1.1"
    for split in ("train", "valid"):
        table = read_mura_index(synthetic_root, split)
        assert len(table) == len(_lines(mura / f"{split}_image_paths.csv"))
        assert table["study_id"].nunique() == len(_lines(mura / f"{split}_labeled_studies.csv"))
        first_study = _lines(mura / f"{split}_labeled_studies.csv")[0].split(",")[0].rstrip("/")
        assert first_study in set(table["study_id"])
        # the trap this guards against
        assert len(pd.read_csv(mura / f"{split}_image_paths.csv")) == len(table) - 1


def test_index_columns_and_values(synthetic_root):
    table = read_mura_index(synthetic_root / "MURA-v1.1", "train")  # the MURA-v1.1 folder itself works too
    assert {"path", "body_part", "patient_id", "study_id", "label"} <= set(table.columns)
    assert set(table["body_part"]) == set(BODY_PARTS)
    assert set(table["label"]) == {0, 1}
    assert all(p.startswith(str(synthetic_root)) for p in table["path"])
    suffix_label = table["study_id"].str.endswith("_positive").astype(int)
    assert (suffix_label == table["label"]).all()


def test_a_copy_with_a_header_line_is_accepted(mura_copy):
    for name, header in (("train_image_paths.csv", "path"), ("train_labeled_studies.csv", "study,label")):
        path = mura_copy / "MURA-v1.1" / name
        path.write_text(header + "\n" + path.read_text())
    assert len(read_mura_index(mura_copy, "train")) == len(_lines(mura_copy / "MURA-v1.1/train_image_paths.csv")) - 1


def test_label_disagreeing_with_folder_is_an_error(mura_copy):
    path = mura_copy / "MURA-v1.1/train_labeled_studies.csv"
    rows = _lines(path)
    study, label = rows[0].rsplit(",", 1)
    rows[0] = f"{study},{1 - int(label)}"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(MuraIndexError, match=r"1 rows have a label that disagrees") as err:
        read_mura_index(mura_copy, "train")
    assert study.rstrip("/") in str(err.value)


def test_missing_images_are_counted_and_listed(mura_copy):
    table = read_mura_index(mura_copy, "train")
    for path in table["path"][:3]:
        (mura_copy / path).unlink() if not path.startswith("/") else __import__("os").unlink(path)
    with pytest.raises(MuraIndexError, match=r"3 listed images do not exist") as err:
        read_mura_index(mura_copy, "train")
    assert table["path"][0] in str(err.value)


@pytest.mark.parametrize(
    "bad_row, message",
    [
        ("MURA-v1.1/train/XR_KNEE/patient99999/study1_positive/,1", "unknown body part"),
        ("MURA-v1.1/train/XR_WRIST/person1/study1_positive/,1", "not MURA study paths"),
        ("MURA-v1.1/train/XR_WRIST/patient99999/study1_positive/,2", "label other than 0 or 1"),
        ("garbage", "not MURA study paths"),
    ],
)
def test_malformed_study_rows(mura_copy, bad_row, message):
    path = mura_copy / "MURA-v1.1/train_labeled_studies.csv"
    path.write_text(path.read_text() + bad_row + "\n")
    with pytest.raises(MuraIndexError, match=message):
        read_mura_index(mura_copy, "train")


def test_image_without_a_study_is_an_error(mura_copy):
    path = mura_copy / "MURA-v1.1/train_image_paths.csv"
    path.write_text(path.read_text() + "MURA-v1.1/train/XR_HAND/patient99999/study1_negative/image1.png\n")
    with pytest.raises(MuraIndexError, match="belong to no study"):
        read_mura_index(mura_copy, "train", check_files=False)


def test_missing_root_is_clear(tmp_path):
    with pytest.raises(MuraIndexError, match="no MURA-v1.1 folder"):
        read_mura_index(tmp_path, "train")


def test_patient_split_has_no_leak_and_keeps_parts(synthetic_root):
    table = read_mura_index(synthetic_root, "train")
    train, val = split_by_patient(table, 0.3, seed=1)
    assert not set(train["patient_id"]) & set(val["patient_id"])
    assert len(train) + len(val) == len(table)
    assert set(val["body_part"]) == set(BODY_PARTS)
    again_train, again_val = split_by_patient(table, 0.3, seed=1)
    pd.testing.assert_frame_equal(val, again_val)
    share = val["study_id"].nunique() / table["study_id"].nunique()
    assert 0.15 < share < 0.4


def test_patients_span_body_parts_in_synthetic_data(synthetic_root):
    table = read_mura_index(synthetic_root, "train")
    assert (table.groupby("patient_id")["body_part"].nunique() > 1).any()


def test_synthetic_images_look_like_mura(synthetic_root):
    table = read_mura_index(synthetic_root, "train")
    modes = set()
    for path in table["path"][:40]:
        with Image.open(path) as image:
            assert max(image.size) == 512 and image.format == "PNG"
            modes.add(image.mode)
    assert "L" in modes
    lesions = pd.read_csv(synthetic_root / "MURA-v1.1/lesions.csv")
    assert set(lesions["kind"]) <= {"fracture", "hardware", "lytic"} and len(lesions) > 0
    both = pd.concat([table, read_mura_index(synthetic_root, "valid")])
    labels = both.set_index(both["path"].str.split("/MURA-v1.1/").str[1])["label"]
    assert (labels.loc[lesions["path"].str.removeprefix("MURA-v1.1/")] == 1).all()  # lesions only in abnormal studies


def test_synthetic_is_deterministic(synthetic_root, tmp_path):
    from mura_mt.data.synthetic import make_synthetic_mura

    make_synthetic_mura(tmp_path, studies_per_part=6, valid_studies_per_part=3, seed=0)
    for name in ("train_labeled_studies.csv", "lesions.csv"):
        assert (tmp_path / "MURA-v1.1" / name).read_text() == (synthetic_root / "MURA-v1.1" / name).read_text()
    first = read_mura_index(tmp_path, "valid")["path"][0]
    reference = first.replace(str(tmp_path), str(synthetic_root))
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(reference)))


def test_own_csv_goes_through_the_same_checks(synthetic_root, tmp_path):
    table = read_mura_index(synthetic_root, "valid")
    table.to_csv(tmp_path / "mine.csv", index=False)
    mine = read_csv_index(tmp_path / "mine.csv")
    pd.testing.assert_frame_equal(mine, table)
    broken = table.copy()
    broken.loc[0, "body_part"] = "knee"
    broken.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(MuraIndexError, match="unknown body part"):
        read_csv_index(tmp_path / "bad.csv")
