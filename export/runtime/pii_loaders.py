"""What the `pii` pipeline loads from its version folder besides the tokenizer: the
package's recognizers (recognizers.py, loaded by path) and, for the cpu target, the ONNX
graph run in this process (`OnnxRuntimeCore`; the gpu target's core is the `pii_core`
model, called through BLS instead)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np


def load_recognizers(path: Path) -> tuple[Callable[[str], list[Any]], ...]:
    """The package's `_recognizers.py`, shipped in the artifact and loaded by path: it
    imports only `re`, `dataclasses` and `typing`, so it runs as it is, no port to drift
    from the package's patterns (its phone validator included)."""
    name = f"_infergate_pii_recognizers_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load the recognizers from {path}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is built.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return tuple(module.default_recognizers)


class OnnxRuntimeCore:
    """cpu target: the graph runs in this process (the CPU provider: the q4 graph's
    MatMulNBits kernels are onnxruntime contrib ops)."""

    def __init__(self, path: Path, params: dict[str, str]):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("ort_intra_op_threads", 1))
        options.inter_op_num_threads = 1
        # Spinning threads win on an idle machine and lose 2-3x on shared cores.
        spinning = params.get("ort_allow_spinning", "0")
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
        return self.session.run([output], {k: feeds[k] for k in self.input_names})[0]
