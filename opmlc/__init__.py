"""opmlc: compile ONNX models to bit-exact fixed-point programs whose inference can be
disputed on chain, the optimistic way.

The Python API mirrors the CLI: `compile_model` (opmlc compile), `Build.load` and `run`
(opmlc run). See docs/DESIGN.md for the pipeline.
"""

__version__ = "0.1.0"

from opmlc.api import RunResult, run  # noqa: E402
from opmlc.artifact import Build, compile_model  # noqa: E402
from opmlc.errors import OpmlcError  # noqa: E402

__all__ = ["Build", "OpmlcError", "RunResult", "__version__", "compile_model", "run"]
