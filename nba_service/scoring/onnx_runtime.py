"""ONNX Runtime behind the `Scorer` interface (the artifact's `model.onnx`, from onnxmltools).

ONNX's TreeEnsemble works in float32: thresholds are rounded to float32 and leaf values are
summed in float32, so its probabilities differ from LightGBM's float64 ones by up to
`ONNX_TOLERANCE` (docs/scoring.md derives the bound and shows the top-10 stays the same).
The converter also cannot express LightGBM's zero-as-missing splits; the parity check at load
catches such a model and the service falls back to another backend.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

__all__ = ["ONNX_TOLERANCE", "OnnxScorer"]

# Max abs difference of probabilities accepted from the float32 backend (docs/scoring.md).
ONNX_TOLERANCE = 1e-5
_PROBABILITIES = "probabilities"


class OnnxScorer:
    """Scores with an ONNX Runtime session: one intra-op thread, like the native scorer."""

    backend = "onnx"

    def __init__(self, model: bytes, version: str, feature_names: list[str],
                 explainer: object | None = None) -> None:
        options = ort.SessionOptions()
        # One decision per worker thread already: operator threads would only oversubscribe.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: the per-call shape notes are noise
        self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(float)":
            raise ValueError("the ONNX model must take one float tensor input")
        shape = inputs[0].shape
        if len(shape) != 2 or shape[1] != len(feature_names):
            raise ValueError(f"the ONNX model takes shape {shape}, expected [N, "
                             f"{len(feature_names)}]")
        outputs = {o.name: o for o in self._session.get_outputs()}
        if _PROBABILITIES not in outputs:
            raise ValueError(f"the ONNX model has no {_PROBABILITIES!r} output "
                             f"(outputs: {', '.join(outputs)}); convert with zipmap=False")
        self._input = inputs[0].name
        self._outputs = [_PROBABILITIES]
        self.version = version
        self.feature_names = list(feature_names)
        self.num_feature = len(feature_names)
        self._explainer = explainer

    def predict(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != self.num_feature:
            raise ValueError(f"expected an (N, {self.num_feature}) matrix, got shape {x.shape}")
        if x.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        probs = self._session.run(self._outputs,
                                  {self._input: np.ascontiguousarray(x, dtype=np.float32)})[0]
        return np.asarray(probs[:, 1], dtype=np.float64)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        contributions = getattr(self._explainer, "contributions", None)
        if contributions is None:
            raise NotImplementedError("this ONNX scorer has no explainer")
        return np.asarray(contributions(x), dtype=np.float64)
