"""Shared fixtures: the digits data and a compiled digits build (made once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from models.make_digits_mlp import load_data

    return load_data()


@pytest.fixture(scope="session")
def digits_build(tmp_path_factory):
    from opmlc.artifact import compile_model

    return compile_model(MODELS / "digits_mlp.onnx", tmp_path_factory.mktemp("digits"))
