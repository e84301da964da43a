"""This machine's measured matrix-multiply peaks, and the one place that says which peak bounds a row.

A peak is the best this machine showed at a ViT-H MLP shape (2048 x 1280 x 5120), best of a few
runs: fp32 (ONNX Runtime MatMul), int8 (ONNX Runtime MatMulInteger, VNNI/AMX where the CPU has
them) and bf16 (torch matmul, AMX/AVX512-BF16 where present).
"""

from __future__ import annotations

import time

import numpy as np


def _best(fn, iters: int) -> float:
    fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.min(times))


def matmul_peaks(threads: int | None = None, m: int = 2048, k: int = 1280, n: int = 5120, iters: int = 5) -> dict:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graphs = {
        "fp32": (helper.make_node("MatMul", ["a", "w"], ["y"]), TensorProto.FLOAT, TensorProto.FLOAT,
                 rng.standard_normal((k, n), dtype=np.float32), rng.standard_normal((m, k), dtype=np.float32)),
        "int8": (helper.make_node("MatMulInteger", ["a", "w"], ["y"]), TensorProto.UINT8, TensorProto.INT32,
                 rng.integers(-127, 127, (k, n), dtype=np.int8), rng.integers(0, 255, (m, k), dtype=np.uint8)),
    }
    flops = 2 * m * k * n
    peaks = {"shape": [m, k, n]}
    for key, (node, in_type, out_type, weight, activation) in graphs.items():
        graph = helper.make_graph([node], key, [helper.make_tensor_value_info("a", in_type, [m, k])],
                                  [helper.make_tensor_value_info("y", out_type, [m, n])],
                                  [numpy_helper.from_array(weight, "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        peaks[f"{key}_gops"] = round(flops / _best(lambda: session.run(None, {"a": activation}), iters) / 1e9, 1)
    try:
        import torch

        a = torch.randn(m, k, dtype=torch.bfloat16)
        b = torch.randn(k, n, dtype=torch.bfloat16)
        peaks["bf16_gops"] = round(flops / _best(lambda: a @ b, iters) / 1e9, 1)
    except ImportError:
        pass
    return peaks


PEAK_OF = {"fp32": "fp32_gops", "f32": "fp32_gops", "fp16": "fp32_gops", "bf16": "bf16_gops", "int8": "int8_gops",
           "int8-cpu": "int8_gops", "u8": "int8_gops", "i8": "int8_gops", "fp8": "fp32_gops"}


def peak_for(precision: str, peaks: dict | None) -> float | None:
    """The measured peak (GOP/s) that bounds a CPU row computing in `precision`: the only place this is decided.
    A quantized file runs its MatMuls in int8 whatever the backend's inference precision says."""
    if not peaks:
        return None
    return peaks.get(PEAK_OF.get(precision, "fp32_gops"))
