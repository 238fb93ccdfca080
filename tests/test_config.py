"""bioaug.config: a refused option is named by its full command-line flag, a section's included."""
from __future__ import annotations

import pytest

from bioaug.classify.config import ClassifierConfig
from bioaug.cli import EXIT_BAD_INPUT, main
from bioaug.config import build_config, flag, section_errors
from bioaug.errors import ConfigError
from bioaug.evaluate.config import EvaluateConfig
from bioaug.gan.config import TrainConfig
from bioaug.augment.config import AugmentConfig


def test_flags_are_built_from_option_names_and_sections():
    assert flag("batch_size") == "--batch-size"
    assert flag("classifier.batch_size") == "--classifier-batch-size"
    with pytest.raises(ConfigError, match="^--classifier-steps: bad$"), section_errors("classifier"):
        raise ConfigError("--steps", "bad")
    with pytest.raises(ConfigError, match="^store-a: bad$"), section_errors("classifier"):
        raise ConfigError("store-a", "bad")  # not an option: left as it is


#: (config class, values, the flag the one error line must start with): every section, range and choice checks.
CASES = [
    (EvaluateConfig, {"classifier": {"batch_size": 1}}, "--classifier-batch-size"),
    (EvaluateConfig, {"classifier": {"lr": 0.0}}, "--classifier-lr"),
    (EvaluateConfig, {"classifier": {"patience": -1}}, "--classifier-patience"),
    (EvaluateConfig, {"classifier": {"tta_shift": 0}}, "--classifier-tta-shift"),
    (EvaluateConfig, {"classifier": {"view": 4}}, "--classifier-view"),
    (EvaluateConfig, {"classifier": {"network": "vgg"}}, "--classifier-network"),
    (EvaluateConfig, {"classifier": {"sampler": "greedy"}}, "--classifier-sampler"),
    (EvaluateConfig, {"generator": {"lr_g": 0.0}}, "--generator-lr-g"),
    (EvaluateConfig, {"generator": {"betas": [0.5]}}, "--generator-betas"),
    (EvaluateConfig, {"generator": {"preset": "stylegan9"}}, "--generator-preset"),
    (EvaluateConfig, {"generator": {"diffaugment": ["blur"]}}, "--generator-diffaugment"),
    (EvaluateConfig, {"generator": {"precision": "fp8"}}, "--generator-precision"),
    (EvaluateConfig, {"generator": {"seed": 3}}, "--generator-seed"),
    (EvaluateConfig, {"augment": {"per_class": 0}}, "--augment-per-class"),
    (EvaluateConfig, {"augment": {"classifier": "vgg"}}, "--augment-classifier"),
    (EvaluateConfig, {"augment": {"copy_ratio": 2.0}}, "--augment-copy-ratio"),
    (EvaluateConfig, {"arms": ["real", "magic"]}, "--arms"),
    (EvaluateConfig, {"classic_recipe": "mixup"}, "--classic-recipe"),
    (EvaluateConfig, {"draw_policy": "greedy"}, "--draw-policy"),
    (EvaluateConfig, {"device": "tpu"}, "--device"),
    (EvaluateConfig, {"budgets": [0.1, 1.5]}, "--budgets"),
    (EvaluateConfig, {"task_threads": 0}, "--task-threads"),
    (TrainConfig, {"lr_d": 0.0}, "--lr-d"),
    (TrainConfig, {"ema_stats": "copied"}, "--ema-stats"),
    (AugmentConfig, {"per_class": 2, "balance_to": 2}, "--per-class"),
    (ClassifierConfig, {"marker": "arrow"}, "--marker"),
]


@pytest.mark.parametrize("cls, values, expected", CASES)
def test_a_bad_option_is_one_line_naming_its_full_flag(cls, values, expected):
    with pytest.raises(ConfigError) as caught:
        build_config(cls, values)
    assert str(caught.value).startswith(f"{expected}: ") and "\n" not in str(caught.value), str(caught.value)


def test_a_section_given_as_a_config_object_names_the_same_flags():
    config = EvaluateConfig(classifier=ClassifierConfig(batch_size=1))
    with pytest.raises(ConfigError, match="^--classifier-batch-size: batch norm needs at least 2 patches"):
        config.validate()


def test_bad_section_options_from_the_command_line_and_a_file_name_their_flags(disc_store, tmp_path, capsys):
    base = ["evaluate", str(disc_store.path), "--out", str(tmp_path / "eval"), "--dry-run"]
    assert main([*base, "--classifier-batch-size", "1"]) == EXIT_BAD_INPUT
    assert "bioaug: error: --classifier-batch-size: batch norm" in capsys.readouterr().err
    profile = tmp_path / "profile.yaml"
    profile.write_text("generator:\n  diffaugment: [color, blur]\n")
    assert main([*base, "--config", str(profile)]) == EXIT_BAD_INPUT
    assert "bioaug: error: --generator-diffaugment: 'blur' is not one of" in capsys.readouterr().err
    profile.write_text("classifier:\n  steps: 2.5\n")
    assert main([*base, "--config", str(profile)]) == EXIT_BAD_INPUT
    assert (f"bioaug: error: {profile} section 'classifier': option 'steps': 2.5 is not a whole number"
            in capsys.readouterr().err)
    assert not (tmp_path / "eval").exists()
