"""INT8: explicit Q/DQ placed by ONNX Runtime's quantization tool, configured for TensorRT.

The graph quantized is the "int8-base" build: weight MatMuls in float32 (they receive Q/DQ with
float32 scales) and attention in float16 (TensorRT's int8 MHA only takes head sizes 16/32/64).
ONNX Runtime's `quantize_static` then puts symmetric signed-int8 Q/DQ on the inputs of exactly the
q/k/v/proj/fc1/fc2 MatMuls (weights per channel on the output axis), never on their outputs.
Calibration images go through the runtime's own preprocessing. The result must pass the Q/DQ lint
and the int8 gate on held-out images before it is accepted.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import onnx

from ijepa_deploy.runtime.preprocessing import Preprocessor

from .onnx_graph import PRECISIONS, GraphSpec, build_graph, weight_matmul_nodes
from .progress import progress, say, stage
from .validation import Case, ReferenceOutputs, validate_onnx

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


class ImageCalibrationReader:
    """A CalibrationDataReader fed by the runtime's preprocessing, one small batch at a time."""

    def __init__(self, images: list[Path], preprocessor: Preprocessor, input_name: str, batch_size: int = 4):
        self._batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
        self._iter = iter(progress(self._batches, "calibrating"))
        self._pre = preprocessor
        self._input = input_name

    def get_next(self):
        batch = next(self._iter, None)
        return None if batch is None else {self._input: self._pre(batch)}

    def rewind(self):  # ORT's protocol; one pass is all a calibrator needs
        self._iter = iter(self._batches)


def quantize_int8(base_path: Path, output_path: Path, reader, method: str = "minmax", external_data: bool = False) -> None:
    """Run ONNX Runtime's static Q/DQ quantization with TensorRT's explicit-quantization settings."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(base_path), load_external_data=False)
    nodes = weight_matmul_nodes(model)
    calibrate = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                 "entropy": CalibrationMethod.Entropy}[method]
    quantize_static(
        model_input=str(base_path), model_output=str(output_path), calibration_data_reader=reader,
        quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        per_channel=True, calibrate_method=calibrate, op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes,
        use_external_data_format=external_data,
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"],
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},  # weights are [in, out]: per output channel
            "DedicatedQDQPair": False,
            "CalibTensorRangeSymmetric": True,
        },
    )


def export_int8(model, work: Path, options, calib: list[Path], preprocessor: Preprocessor, eval_cases: list[Case],
                reference: ReferenceOutputs) -> tuple[Path, dict, dict]:
    """Build the int8-base graph, calibrate and quantize it, lint it, gate it. Returns path,
    validation record and calibration info."""
    from .export import ExportError, check_onnx
    from .qdq_lint import lint_file

    if options.calib_method not in CALIBRATION_METHODS:
        raise ExportError(f"--calib-method must be one of {', '.join(CALIBRATION_METHODS)}")
    if not calib:
        raise ExportError(f"no calibration images found in {options.calib_images}")
    output = work / "model_int8.onnx"
    scratch = Path(tempfile.mkdtemp(prefix=".int8-base.", dir=work))
    try:
        with stage("int8: build the Q/DQ base graph (float32 weight MatMuls, float16 attention)"):
            base = build_graph(model, GraphSpec(PRECISIONS["int8-base"], options.resolution, options.opset),
                               scratch / "base.onnx")
        large = base.with_name(base.name + ".data").exists()
        with stage(f"int8: calibrate ({options.calib_method}, {len(calib)} images) and place Q/DQ"):
            reader = ImageCalibrationReader(calib, preprocessor, "pixel_values")
            quantize_int8(base, output, reader, options.calib_method, external_data=large)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    with stage("int8: Q/DQ lint (TensorRT explicit-quantization rules)"):
        violations = lint_file(output)
    if violations:
        raise ExportError(f"{output.name} breaks {len(violations)} TensorRT Q/DQ rule(s), first: {violations[0]}")
    check_onnx(output)
    with stage("int8: gate vs PyTorch fp32 on held-out images"):
        validation = validate_onnx(output, "int8", eval_cases, reference)
    say(f"  int8: worst cosine {validation['worst_cosine']:.6f}, worst max abs {validation['worst_max_abs']:.2e}")
    calibration = {"method": options.calib_method, "count": len(calib), "images": [p.name for p in calib]}
    return output, validation, calibration
