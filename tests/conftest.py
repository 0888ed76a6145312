"""Shared fixtures: the digits data and a compiled digits build (made once per session).

Also the session's setup: before any test module is collected (so before a skip on a missing
anvil or solc is decided), the pinned npm packages are installed into toolchain/node_modules;
under xdist with several workers, each worker's native runs default to one thread.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


def pytest_configure(config: pytest.Config) -> None:
    """Installs solc and anvil (`npm ci`, which never rewrites the lock) when they are missing.

    Runs once, in the controlling process: xdist's workers start after it and find them. Without
    npm, or offline, the tests that need them are skipped with the reason.
    """
    if hasattr(config, "workerinput"):
        # the workers share the cores: a native run's default is one thread (the tests that are
        # about threads ask for their counts)
        if int(config.workerinput.get("workercount", 1)) > 1:
            os.environ.setdefault("OPMLC_THREADS", "1")
        return
    from toolchain.errors import CompilerError
    from toolchain.solc import ensure_node_modules, node_available, node_modules_complete

    if node_modules_complete() or not node_available():
        return
    try:
        ensure_node_modules()
    except CompilerError as exc:
        config.issue_config_time_warning(pytest.PytestWarning(f"npm packages not installed: {exc}"), stacklevel=2)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests marked slow first, the others in their order: under xdist the longest ones then
    start early, instead of one of them (a minute and more) running alone at the end of the suite."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from models.make_digits_mlp import load_data

    return load_data()


@pytest.fixture(scope="session")
def digits_build(tmp_path_factory):
    from opmlc.artifact import compile_model

    return compile_model(MODELS / "digits_mlp.onnx", tmp_path_factory.mktemp("digits"))
