"""The export: a reference PyTorch I-JEPA to validated ONNX artifacts (fp32, fp16, bf16, int8, int8-cpu,
fp8), TensorRT plans and a Triton repository.

    from ijepa_deploy.reference_model import load_checkpoint
    from ijepa_deploy.exporter import ExportOptions, export
    folder = export(load_checkpoint(variant="vith14", random_init=True), ExportOptions(precisions=("fp32", "fp16")))
"""

from .options import ExportOptions
from .pipeline import export

__all__ = ["ExportOptions", "export"]
