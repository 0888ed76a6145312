"""Calibration: fractional bits per tensor from the ranges a float run of the model observes.

`opmlc compile MODEL --calibrate SAMPLES.npy` runs the float model (onnxruntime, or onnx's
reference evaluator for what onnxruntime cannot run) on the samples, with every intermediate
tensor exposed, and gives each float tensor the most fractional bits at which its largest
observed magnitude, times HEADROOM, still fits an int32:

    f = min(max_frac, floor(31 − log2(HEADROOM · peak)))      (peak = max |x| over the samples)

so nothing saturates on the samples, with a factor-2 margin for unseen inputs. A tensor whose
peak needs f < 0 cannot be represented in fx32 at all: an UnsupportedError names it. Tensors
never observed (the lowering's own intermediates) take the range analysis's bits
(frontend/ranges.py), started from the samples' range. The choice is recorded in the build
manifest ("quantization"); `opmlc compile --calibrate` prints each tensor's headroom.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx

from opmlc.errors import InputError, UnsupportedError
from opmlc.frontend.context import QuantPolicy

HEADROOM = 2.0
MAX_FRAC = 24  # more bits would leave int64 accumulators of products too little room
DEFAULT_FRAC = 16


def frac_for_peak(peak: float, max_frac: int = MAX_FRAC) -> int | None:
    """The calibrated bits for a tensor with this largest magnitude; None if none fits."""
    if not math.isfinite(peak):
        return None
    if peak == 0.0:
        return max_frac
    f = math.floor(31 - math.log2(HEADROOM * peak))
    return None if f < 0 else min(max_frac, f)


def fracs_from_values(values: dict[str, np.ndarray], max_frac: int = MAX_FRAC) -> dict[str, int]:
    """Bits for every float tensor among `values`; raise UnsupportedError for one that cannot fit."""
    out = {}
    for name, arr in values.items():
        arr = np.asarray(arr)
        if not np.issubdtype(arr.dtype, np.floating):
            continue
        peak = float(np.max(np.abs(arr))) if arr.size else 0.0
        f = frac_for_peak(peak, max_frac)
        if f is None:
            raise UnsupportedError(
                f"tensor {name!r} reaches {peak:.3g} on the calibration samples, "
                "which fixed point (int32) cannot represent")
        out[name] = f
    return out


def float_values(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor of a float run (inputs, intermediates, outputs) on `feeds`."""
    from onnx.reference import ReferenceEvaluator

    try:
        import onnxruntime as ort

        m = onnx.ModelProto.FromString(model.SerializeToString())
        known = {o.name for o in m.graph.output}
        for node in m.graph.node:
            for o in node.output:
                if o and o not in known:
                    m.graph.output.append(onnx.ValueInfoProto(name=o))
                    known.add(o)
        ort.set_default_logger_severity(4)  # a failing run falls back below: its error log is noise
        options = ort.SessionOptions()
        options.log_severity_level = 4
        sess = ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        values = dict(zip(names, sess.run(names, feeds), strict=True))
    except Exception as ort_exc:  # onnxruntime lacks the op or opset: the reference evaluator has more
        try:
            values = ReferenceEvaluator(model).run(None, feeds, intermediate=True)
        except Exception as ref_exc:  # neither can run the model on these samples: say why, in one line
            raise InputError(
                f"--calibrate: the float model does not run on the samples ({_first_line(ort_exc)}; "
                f"onnx's reference evaluator: {_first_line(ref_exc)}); check the samples' shape") from None
    values.update(feeds)
    return {k: np.asarray(v) for k, v in values.items() if v is not None and not isinstance(v, list)}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def observed_peaks(model_path: str | Path, samples: np.ndarray) -> tuple[str, dict[str, float]]:
    """The model's one input name, and every float tensor's largest |value| over `samples`."""
    model = onnx.load(str(model_path))
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise InputError(f"--calibrate takes samples for a model with one input; this one has {len(inputs)}")
    samples = np.asarray(samples)
    if not np.issubdtype(samples.dtype, np.floating) or not np.all(np.isfinite(samples)):
        raise InputError("--calibrate: the samples must be a finite float array")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    want = ["S", *(str(d) if d > 0 else "?" for d in dims[1:])]
    if dims and (samples.ndim != len(dims) or any(0 < d != n for d, n in zip(dims[1:], samples.shape[1:], strict=True))):
        raise InputError(f"--calibrate: the samples have shape {list(samples.shape)}, but input "
                         f"{inputs[0].name!r} takes [{', '.join(want)}] (S samples); reshape them so")
    if dims and dims[0] > 0 and samples.shape[0] != dims[0]:  # a fixed batch: one sample at a time
        batches = [samples[i:i + dims[0]] for i in range(0, samples.shape[0] - dims[0] + 1, dims[0])]
    else:
        batches = [samples]
    peaks: dict[str, float] = {}
    for batch in batches:
        for name, arr in float_values(model, {inputs[0].name: batch.astype(np.float32)}).items():
            if np.issubdtype(arr.dtype, np.floating) and arr.size:
                peaks[name] = max(peaks.get(name, 0.0), float(np.max(np.abs(arr))))
    return inputs[0].name, peaks


def calibrate(model_path: str | Path, samples: np.ndarray, default: int = DEFAULT_FRAC,
              max_frac: int = MAX_FRAC) -> QuantPolicy:
    """A QuantPolicy from a float run of the model on `samples` (its first input's values): the
    observed tensors' bits as overrides, and the samples' range as the input's range (which the
    range analysis starts from for every tensor the float run does not name)."""
    name, peaks = observed_peaks(model_path, samples)
    overrides = fracs_from_values({k: np.array([v]) for k, v in peaks.items()}, max_frac)
    samples = np.asarray(samples, dtype=np.float64)
    return QuantPolicy(default=default, overrides=overrides,
                       input_ranges={name: (float(samples.min()), float(samples.max()))})
