"""INT8: explicit Q/DQ placed by ONNX Runtime's quantization tool, one recipe per target.

`int8` (TensorRT): the graph quantized is the "int8-base" build: weight MatMuls in float32 (they
receive Q/DQ with float32 scales) and attention in float16 (TensorRT's int8 MHA only takes head
sizes 16/32/64). `quantize_static` puts symmetric signed-int8 Q/DQ on the inputs of exactly the
q/k/v/proj/fc1/fc2 MatMuls (weights per channel on the output axis), never on their outputs. It
must pass the TensorRT Q/DQ lint.

`int8-cpu` (ONNX Runtime on CPUs): the same MatMuls of the plain fp32 graph, with unsigned
asymmetric activations, which is what ONNX Runtime's U8S8 CPU kernels (MatMulIntegerToFloat) take.
Measured on ViT-H/14: faster on CPU than the TensorRT file (no float16 casts, no U8/S8 conversion)
and than dynamic quantization. Not for TensorRT (which rejects UINT8).

Calibration images go through the runtime's own preprocessing; both must pass the int8 gate on
held-out images before they are accepted.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import onnx

from ijepa_deploy.runtime.preprocessing import Preprocessor

from .onnx_graph import PRECISIONS, GraphSpec, build_graph, weight_matmul_nodes
from .progress import progress, say, stage
from .validation import Case, ReferenceOutputs, validate_onnx

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


@dataclass(frozen=True)
class QuantRecipe:
    precision: str
    base: str  # the graph quantized: "int8-base" (built here) or "fp32" (the fp32 artifact)
    signed_activations: bool  # True: symmetric QInt8 (TensorRT); False: asymmetric QUInt8 (CPU kernels)
    tensorrt: bool  # must pass the TensorRT Q/DQ lint
    target: str


RECIPES = {
    "int8": QuantRecipe("int8", "int8-base", True, True, "TensorRT 10.12+/11 strongly typed; also ONNX Runtime"),
    "int8-cpu": QuantRecipe("int8-cpu", "fp32", False, False, "ONNX Runtime CPU (U8S8 kernels); not for TensorRT"),
}


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


@contextmanager
def _quiet_root_logger():
    """ONNX Runtime's quantizer logs advice ("consider pre-processing") on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(base_path: Path, output_path: Path, reader, method: str = "minmax", external_data: bool = False,
                  recipe: QuantRecipe = RECIPES["int8"]) -> None:
    """Run ONNX Runtime's static Q/DQ quantization on the weight MatMuls with `recipe`'s settings."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(base_path), load_external_data=False)
    nodes = weight_matmul_nodes(model)
    calibrate = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                 "entropy": CalibrationMethod.Entropy}[method]
    with _quiet_root_logger():
        quantize_static(
            model_input=str(base_path), model_output=str(output_path), calibration_data_reader=reader,
            quant_format=QuantFormat.QDQ, weight_type=QuantType.QInt8,
            activation_type=QuantType.QInt8 if recipe.signed_activations else QuantType.QUInt8,
            per_channel=True, calibrate_method=calibrate, op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes,
            use_external_data_format=external_data,
            extra_options={
                "ActivationSymmetric": recipe.signed_activations,
                "WeightSymmetric": True,
                "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"],
                "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},  # weights are [in, out]: per output channel
                "DedicatedQDQPair": False,
                "CalibTensorRangeSymmetric": recipe.signed_activations,
            },
        )


def export_int8(model, work: Path, options, calib: list[Path], preprocessor: Preprocessor, eval_cases: list[Case],
                reference: ReferenceOutputs, recipe: QuantRecipe = RECIPES["int8"]) -> tuple[Path, dict, dict]:
    """Quantize with `recipe` (calibrated on `calib`), lint (TensorRT recipe), gate on held-out
    images. Returns path, validation record and calibration info."""
    from .export import ExportError, check_onnx
    from .qdq_lint import lint_file
    from .validation import GATES

    if options.calib_method not in CALIBRATION_METHODS:
        raise ExportError(f"--calib-method must be one of {', '.join(CALIBRATION_METHODS)}")
    if not calib:
        raise ExportError(f"no calibration images found in {options.calib_images}")
    output = work / f"model_{recipe.precision.replace('-', '_')}.onnx"
    scratch = Path(tempfile.mkdtemp(prefix=".int8-base.", dir=work))
    try:
        if recipe.base == "fp32":
            base = work / "model_fp32.onnx"
        else:
            with stage(f"{recipe.precision}: build the Q/DQ base graph (float32 weight MatMuls, float16 attention)"):
                base = build_graph(model, GraphSpec(PRECISIONS["int8-base"], options.resolution, options.opset),
                                   scratch / "base.onnx")
        large = base.with_name(base.name + ".data").exists()
        with stage(f"{recipe.precision}: calibrate ({options.calib_method}, {len(calib)} images) and place Q/DQ"):
            reader = ImageCalibrationReader(calib, preprocessor, "pixel_values")
            quantize_int8(base, output, reader, options.calib_method, external_data=large, recipe=recipe)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if recipe.tensorrt:
        with stage(f"{recipe.precision}: Q/DQ lint (TensorRT explicit-quantization rules)"):
            violations = lint_file(output)
        if violations:
            raise ExportError(f"{output.name} breaks {len(violations)} TensorRT Q/DQ rule(s), first: {violations[0]}")
    check_onnx(output)
    with stage(f"{recipe.precision}: gate vs PyTorch fp32 on held-out images"):
        validation = validate_onnx(output, recipe.precision, eval_cases, reference, gate=GATES["int8"])
    say(f"  {recipe.precision}: worst cosine {validation['worst_cosine']:.6f}, "
        f"worst max abs {validation['worst_max_abs']:.2e}")
    calibration = {"method": options.calib_method, "count": len(calib), "images": [p.name for p in calib],
                   "activations": "int8 symmetric" if recipe.signed_activations else "uint8 asymmetric",
                   "weights": "int8 symmetric, per output channel", "target": recipe.target}
    return output, validation, calibration
