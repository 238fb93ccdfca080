"""The library's public surface: ``import bioaug`` stays light, and the stage functions stay callable."""
from __future__ import annotations

import subprocess
import sys

import pytest

from bioaug.errors import BioaugError


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (imports are per process) and return what it printed."""
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def test_import_bioaug_loads_no_heavy_module() -> None:
    code = ("import sys, bioaug; bioaug.TileConfig; bioaug.AugmentConfig; bioaug.TrainConfig; "
            "print(sorted(m for m in ('torch', 'openslide', 'sklearn', 'monai') if m in sys.modules))")
    assert run_python(code) == "[]"


@pytest.mark.parametrize("stage, submodule", [("tile", "bioaug.tile.labels"), ("augment", "bioaug.augment.records")])
def test_stage_functions_stay_callable_after_their_package_is_imported(stage: str, submodule: str) -> None:
    # Importing a module of the stage's package puts the package where the function was; it must still call it.
    code = (f"import bioaug, {submodule}; from bioaug import {stage}; "
            f"print(callable(bioaug.{stage}), callable({stage}), type(bioaug.{stage}).__name__)")
    assert run_python(code) == "True True _StagePackage"


def test_the_callable_augment_package_runs_the_augment_stage(tmp_path) -> None:
    import bioaug
    import bioaug.augment.records  # noqa: F401 (the package now stands where the function was)

    with pytest.raises(BioaugError, match="missing-run"):
        bioaug.augment(tmp_path / "missing-run", tmp_path / "out", bioaug.AugmentConfig(per_class=2))
    assert not (tmp_path / "out").exists()
