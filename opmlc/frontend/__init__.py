"""The ONNX frontend: load, check, fold, quantize, and lower a model onto the fixed-point IR."""

from opmlc.frontend.context import QuantPolicy
from opmlc.frontend.lower import Frontend, lower_model

__all__ = ["Frontend", "QuantPolicy", "lower_model"]
