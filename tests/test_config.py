"""Experiment configs: presets, overrides, validation errors."""

import pytest

from attri_ssc.config import apply_overrides, load_config, load_raw, preset_names
from attri_ssc.errors import ConfigError


def test_all_presets_load_and_round_trip():
    from attri_ssc.config import ExperimentConfig

    assert {"smoke", "demo-2d", "paper-2d", "paper-3d"} <= set(preset_names())
    for name in preset_names():
        cfg = load_config(name)
        again = ExperimentConfig.from_dict(cfg.to_dict())
        assert again == cfg


def test_paper_presets_carry_table_7():
    cfg = load_config("paper-3d")
    assert cfg.model.n_atoms == 512 and cfg.model.latent_channels == 256 and cfg.model.n_iter == 16
    assert cfg.train.batch_size == 4 and cfg.train.delta == 10.0 and cfg.train.top_k == 5
    s1, s2, s3 = cfg.stages
    assert (s1.lr, s2.lr, s3.lr) == (1e-4, 4e-4, 1e-4)
    assert (s2.lambda_row, s2.lambda_col, s3.gamma, s3.mu) == (10.0, 10.0, 5.0, 0.01)


def test_overrides_parse_yaml_scalars_and_list_indices():
    raw = apply_overrides(load_raw("smoke"), ["train.batch_size=8", "stages.1.gamma=0", "train.gs_variant=group"])
    assert raw["train"]["batch_size"] == 8
    assert raw["stages"][1]["gamma"] == 0
    assert raw["train"]["gs_variant"] == "group"


@pytest.mark.parametrize("override, needle", [
    ("stages.1.gamma=-1", "gamma"),
    ("train.top_k=1000", "top_k"),
    ("data.attributes=[lv_volume,not_an_attribute]", "not_an_attribute"),
    ("train.family=gan", "family"),
    ("train.bogus=1", "bogus"),
    ("model.input_size=24", "input_size"),
    ("train.support_rank=loudest", "support_rank"),
])
def test_invalid_values_raise_config_errors_naming_the_field(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config("smoke", [override])


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="demo-2d"):
        load_config("no-such-preset")


def test_exclusive_support_needs_enough_atoms():
    with pytest.raises(ConfigError, match="exclusive_support"):
        load_config("smoke", ["train.exclusive_support=true", "train.top_k=5"])  # 4 attributes x 5 > K = 16
    load_config("smoke", ["train.exclusive_support=true", "train.top_k=5", "train.one_to_one=true"])  # 1 atom each


def test_stage_sparsity_ramp_schedule_and_validation():
    from attri_ssc.config import StageSpec

    assert all(StageSpec("s", 10).sparsity_scale(i) == 1.0 for i in range(10))
    ramp = StageSpec("s", 10, sparsity_ramp=4)
    assert [ramp.sparsity_scale(i) for i in range(7)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    for bad in (-1, 2.5, True):
        with pytest.raises(ConfigError, match="sparsity_ramp"):
            StageSpec("s", 10, sparsity_ramp=bad).validate()
    cfg = load_config("smoke", ["stages.0.sparsity_ramp=3"])
    assert cfg.stages[0].sparsity_ramp == 3 and cfg.stages[1].sparsity_ramp == 0


def test_stage_lr_final_schedule_and_validation():
    from attri_ssc.config import StageSpec

    constant = StageSpec("s", 10, lr=1e-3)
    assert all(constant.lr_scale(i) == 1.0 for i in range(10))
    decay = StageSpec("s", 11, lr=1e-3, lr_final=1e-4)
    scales = [decay.lr_scale(i) for i in range(11)]
    assert scales[0] == 1.0 and scales[-1] == pytest.approx(0.1) and scales[5] == pytest.approx(0.55)
    assert all(a > b for a, b in zip(scales, scales[1:]))
    for bad in (-1e-5, 2e-3):
        with pytest.raises(ConfigError, match="lr_final"):
            StageSpec("s", 10, lr=1e-3, lr_final=bad).validate()
    cfg = load_config("smoke", ["stages.2.lr_final=1.0e-5"])
    assert cfg.stages[2].lr_final == 1e-5 and cfg.stages[0].lr_final is None
