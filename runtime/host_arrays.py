"""Pixels a host already holds, seen as numpy arrays without copying them.

A host (a C++ service, a video pipeline, another framework) passes its own memory: a numpy array, any
object with the buffer protocol (`memoryview`, pybind11 buffers, `array.array`), `__array_interface__`,
`__dlpack__` (CPU tensors of torch, JAX, CuPy-on-host, ...) or a bare DLPack capsule ("dltensor", as
`torch.utils.dlpack.to_dlpack` returns). Each becomes a numpy *view* of the same memory: nothing is
copied here, and the caller keeps owning (and must not change) the memory until the call returns.
Encoded images (`bytes`, `bytearray`, 1-D buffers) and PIL images are not pixel arrays.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np
from PIL import Image

from ijepa_deploy.contract.errors import UsageError

_NOT_PIXELS = (str, bytes, bytearray, os.PathLike, Image.Image)
_CPU = 1  # DLPack's kDLCPU
_capsule_valid = ctypes.pythonapi.PyCapsule_IsValid
_capsule_valid.restype, _capsule_valid.argtypes = ctypes.c_int, [ctypes.py_object, ctypes.c_char_p]
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype, _capsule_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLTensorHead(ctypes.Structure):  # the first fields of DLManagedTensor.dl_tensor (DLPack < 1.0)
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice)]


class _Capsule:
    """A bare "dltensor" capsule made consumable by `np.from_dlpack` (which wants the protocol methods)."""

    def __init__(self, capsule, device: tuple[int, int]):
        self._capsule, self._device = capsule, device

    def __dlpack__(self, *args, **kwargs):
        return self._capsule

    def __dlpack_device__(self):
        return self._device


def is_dlpack_capsule(obj) -> bool:
    return type(obj).__name__ == "PyCapsule" and bool(_capsule_valid(obj, b"dltensor"))


def host_array(obj) -> np.ndarray | None:
    """A numpy view of a host's pixel memory, or None when `obj` is not a pixel array (a path, encoded
    bytes, a PIL image). Device (GPU) memory is refused: copy it to the host first."""
    if isinstance(obj, np.ndarray):
        return obj
    if isinstance(obj, _NOT_PIXELS):
        return None
    if is_dlpack_capsule(obj):
        head = _DLTensorHead.from_address(_capsule_pointer(obj, b"dltensor"))
        obj = _Capsule(obj, (head.device.device_type, head.device.device_id))
    if hasattr(obj, "__dlpack__"):
        device = obj.__dlpack_device__()[0] if hasattr(obj, "__dlpack_device__") else _CPU
        if device != _CPU:
            raise UsageError(f"a DLPack tensor on device type {device} was passed; pass CPU memory (the runtime "
                             "preprocesses on the CPU), e.g. tensor.cpu()")
        return np.from_dlpack(obj)
    if hasattr(obj, "__array_interface__"):
        return np.asarray(obj)
    try:
        view = memoryview(obj)
    except TypeError:
        return None
    return np.asarray(view) if view.ndim >= 2 else None


def image_rows(array: np.ndarray) -> list[np.ndarray] | None:
    """An N x H x W x C batch as N views (no copy); None for anything that is one image."""
    return list(array) if array.ndim == 4 else None
