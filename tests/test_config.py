import pytest

from mura_mt.config import ConfigError, load_config, save_config
from tests.conftest import REPO


def test_overrides_are_typed_and_applied():
    cfg = load_config(
        REPO / "configs/smoke.yaml", ["train.lr=3e-4", "train.epochs=5", "data.root=/x", "model.pretrained=true"]
    )
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 5 and cfg.data.root == "/x" and cfg.model.pretrained is True


def test_yaml_round_trip(tmp_path):
    cfg = load_config(REPO / "configs/synthetic.yaml", ["train.batch_size=7"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize("override", ["train.lrr=1", "bogus=1", "train.augment.spin=3"])
def test_unknown_keys_raise_and_name_the_key(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].split(".")[-1]):
        load_config(REPO / "configs/smoke.yaml", [override])


@pytest.mark.parametrize("override", ["train.epochs=two", "model.pretrained=3", "train.lr=[1]"])
def test_wrong_types_raise(override):
    with pytest.raises(ConfigError):
        load_config(None, [override])


def test_every_shipped_config_loads():
    for path in (REPO / "configs").glob("*.yaml"):
        load_config(path)


def test_spaces_requirements_match_the_package_pins():
    import tomllib

    pinned = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = [
        line for line in (REPO / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert listed == pinned
    front_matter = (REPO / "README.md").read_text().split("---")[1]
    gradio_pin = next(p for p in pinned if p.startswith("gradio[mcp]=="))
    assert f"sdk_version: {gradio_pin.split('==')[1]}" in front_matter


def test_yes_no_on_off_stay_words_where_a_word_is_expected():
    """Accelerate's "no" (what train.mixed_precision auto resolves to on a CPU without bf16) is a word, not False;
    a boolean key still takes yes/no."""
    cfg = load_config(None, ["train.mixed_precision=no", "model.pretrained=no"])
    assert cfg.train.mixed_precision == "no" and cfg.model.pretrained is False
    assert load_config(None, ["model.pretrained=true"]).model.pretrained is True
