"""The export: a reference PyTorch I-JEPA to validated ONNX artifacts (fp32, fp16, bf16, int8, int8-cpu,
fp8), TensorRT plans and a Triton repository.

    from ijepa_deploy.reference_model import load_checkpoint
    from ijepa_deploy.exporter import ExportOptions, export
    folder = export(load_checkpoint(variant="vith14", random_init=True), ExportOptions(precisions=("fp32", "fp16")))

The two names load on first use: the TensorRT, Triton and lint modules of this package do not need
torch, and importing one of them must not start it.
"""

__all__ = ["ExportOptions", "export"]


def __getattr__(name: str):
    if name == "export":
        from .pipeline import export

        return export
    if name == "ExportOptions":
        from .options import ExportOptions

        return ExportOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
