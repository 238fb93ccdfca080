"""bioaug.devices: every stage's device option resolved in one place."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bioaug.devices import resolve_device
from bioaug.errors import ConfigError


@pytest.mark.parametrize("gpu, name, expected", [
    (False, "auto", "cpu"), (False, None, "cpu"), (False, "cpu", "cpu"), (True, "auto", "cuda"),
    (True, "cpu", "cpu"), (True, "cuda", "cuda"), (True, torch.device("cuda", 1), "cuda:1"),
])
def test_auto_takes_a_gpu_when_there_is_one_and_names_pass_through(monkeypatch, gpu, name, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    assert resolve_device(name) == torch.device(expected)


@pytest.mark.parametrize("name", ["cuda", "cuda:1", torch.device("cuda")])
def test_cuda_without_a_gpu_is_one_line_naming_the_flag(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^--device: cuda(:1)? was asked for, but torch sees no CUDA device$"):
        resolve_device(name)


def test_importing_the_device_names_does_not_import_torch():
    code = "import sys; from bioaug.devices import DEVICES; print(DEVICES, 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "('auto', 'cpu', 'cuda') False"
