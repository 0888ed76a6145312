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

# Claims, proofs, the parties and deployments: imported on first use (they pull in web3, which
# `import opmlc` for compiling and running should not pay for).
_LAZY = {
    "claim": ("opmlc.dispute.claims", "make_claim"),
    "dispute_record": ("opmlc.dispute.claims", "dispute_record"),
    "prove_step": ("opmlc.prove", "prove_step"),
    "Tamper": ("opmlc.dispute.graph_trace", "Tamper"),
    "connect": ("toolchain.chain", "connect"),
    "Deployment": ("opmlc.dispute.onchain", "Deployment"),
    "DeploymentFile": ("opmlc.dispute.deployment", "DeploymentFile"),
    "deploy": ("opmlc.dispute.deployment", "deploy"),
    "open_deployment": ("opmlc.dispute.deployment", "open_deployment"),
    "InputStore": ("opmlc.dispute.deployment", "InputStore"),
    "local_account": ("opmlc.dispute.accounts", "local_account"),
    "use_account": ("opmlc.dispute.accounts", "use_account"),
    "Requester": ("opmlc.dispute.parties", "Requester"),
    "Server": ("opmlc.dispute.parties", "Server"),
    "Challenger": ("opmlc.dispute.parties", "Challenger"),
    "ServerService": ("opmlc.dispute.service", "ServerService"),
    "ChallengerService": ("opmlc.dispute.service", "ChallengerService"),
    "task_report": ("opmlc.dispute.service", "task_report"),
}
__all__ += sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'opmlc' has no attribute {name!r}")
