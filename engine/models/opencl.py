"""OpenCL devices, found through an OpenCL ICD loader with ctypes: no pyopencl needed.

LightGBM's OpenCL learner (``device_type = "gpu"``) runs on whatever device OpenCL offers, a CPU
runtime such as PoCL included, where it trains several times slower than LightGBM's CPU learner.
Its own probe cannot tell the device's type; :func:`opencl_devices` can, and
:func:`lightgbm_opencl_device` names the device LightGBM will use, by LightGBM's rule:
``gpu_platform_id`` and ``gpu_device_id`` when both are set and exist, else Boost.Compute's default
device (the ``BOOST_COMPUTE_DEFAULT_*`` environment variables, then the first GPU, then the first
CPU, then the first device, in platform order). :func:`cuda_device_name` names a CUDA device.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass
from functools import cache

# OpenCL constants (CL/cl.h)
CL_SUCCESS = 0
CL_DEVICE_TYPE_CPU, CL_DEVICE_TYPE_GPU, CL_DEVICE_TYPE_ACCELERATOR = 2, 4, 8
CL_DEVICE_TYPE_ALL = 0xFFFFFFFF
CL_PLATFORM_NAME = 0x0902
CL_DEVICE_TYPE, CL_DEVICE_NAME, CL_DEVICE_VENDOR = 0x1000, 0x102B, 0x102C
TYPE_NAMES = ((CL_DEVICE_TYPE_GPU, "gpu"), (CL_DEVICE_TYPE_ACCELERATOR, "accelerator"), (CL_DEVICE_TYPE_CPU, "cpu"))
BOOST_DEFAULTS = ("BOOST_COMPUTE_DEFAULT_DEVICE", "BOOST_COMPUTE_DEFAULT_DEVICE_TYPE",
                  "BOOST_COMPUTE_DEFAULT_PLATFORM", "BOOST_COMPUTE_DEFAULT_VENDOR")


@dataclass(frozen=True)
class OpenCLDevice:
    """One device of an OpenCL platform; ``platform_id`` and ``device_id`` are LightGBM's ``gpu_platform_id``
    and ``gpu_device_id`` for it."""

    platform_id: int
    device_id: int
    platform: str
    name: str
    vendor: str
    type: str  # "gpu", "accelerator", "cpu" or "other" (CL_DEVICE_TYPE; a GPU bit wins)

    @property
    def is_gpu(self) -> bool:
        return self.type == "gpu"

    def describe(self) -> str:
        """``name (OpenCL type, platform)``, e.g. ``NVIDIA H200 (OpenCL gpu, NVIDIA CUDA)``."""
        return f"{self.name} (OpenCL {self.type}, {self.platform})"


def library_names() -> list[str]:
    """Where an OpenCL ICD loader may be: LightGBM's own library first (its wheel links the Khronos
    loader in and exports the ``cl…`` functions: the very platforms LightGBM sees), then the system's."""
    import lightgbm.libpath

    if sys.platform == "darwin":
        system = ["/System/Library/Frameworks/OpenCL.framework/OpenCL"]
    elif sys.platform == "win32":
        system = ["OpenCL.dll"]
    else:
        system = [name for name in ("libOpenCL.so.1", ctypes.util.find_library("OpenCL")) if name]
    return [lightgbm.libpath._LIB._name, *system]


def load_opencl() -> ctypes.CDLL | None:
    """The first OpenCL ICD loader of :func:`library_names` that loads and has the OpenCL functions, or None."""
    for name in library_names():
        try:
            lib = ctypes.CDLL(name)
            lib.clGetPlatformIDs  # noqa: B018 (a CUDA-only LightGBM build has no OpenCL)
        except (OSError, AttributeError):
            continue
        lib.clGetPlatformIDs.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
        lib.clGetPlatformInfo.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_size_t, ctypes.c_void_p,
                                          ctypes.POINTER(ctypes.c_size_t)]
        lib.clGetDeviceIDs.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p,
                                       ctypes.POINTER(ctypes.c_uint32)]
        lib.clGetDeviceInfo.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_size_t, ctypes.c_void_p,
                                        ctypes.POINTER(ctypes.c_size_t)]
        for fn in ("clGetPlatformIDs", "clGetPlatformInfo", "clGetDeviceIDs", "clGetDeviceInfo"):
            getattr(lib, fn).restype = ctypes.c_int32
        return lib
    return None


def _handles(query, *args) -> list[int]:
    """The handles an OpenCL ``clGet…IDs(*args, n, handles, &count)`` call lists (none on an error)."""
    count = ctypes.c_uint32(0)
    if query(*args, 0, None, ctypes.byref(count)) != CL_SUCCESS or count.value == 0:
        return []
    handles = (ctypes.c_void_p * count.value)()
    if query(*args, count.value, handles, None) != CL_SUCCESS:
        return []
    return list(handles)


def _info(query, handle: int, param: int) -> bytes:
    """The raw value of ``param`` from ``clGet…Info`` (empty on an error)."""
    size = ctypes.c_size_t(0)
    if query(handle, param, 0, None, ctypes.byref(size)) != CL_SUCCESS or size.value == 0:
        return b""
    buf = ctypes.create_string_buffer(size.value)
    return buf.raw if query(handle, param, size.value, buf, None) == CL_SUCCESS else b""


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace").strip()


def type_name(bits: int) -> str:
    """The name of a CL_DEVICE_TYPE bit field: ``gpu`` when the GPU bit is set, then accelerator, cpu, else other."""
    return next((name for bit, name in TYPE_NAMES if bits & bit), "other")


@cache
def opencl_devices() -> tuple[OpenCLDevice, ...]:
    """Every device of every OpenCL platform, in LightGBM's (Boost.Compute's) order; empty without an
    ICD loader or a platform."""
    lib = load_opencl()
    if lib is None:
        return ()
    found = []
    for p, platform in enumerate(_handles(lib.clGetPlatformIDs)):
        platform_name = _text(_info(lib.clGetPlatformInfo, platform, CL_PLATFORM_NAME))
        for d, device in enumerate(_handles(lib.clGetDeviceIDs, platform, CL_DEVICE_TYPE_ALL)):
            bits = int.from_bytes(_info(lib.clGetDeviceInfo, device, CL_DEVICE_TYPE)[:8] or b"\0", "little")
            found.append(OpenCLDevice(p, d, platform_name, _text(_info(lib.clGetDeviceInfo, device, CL_DEVICE_NAME)),
                                      _text(_info(lib.clGetDeviceInfo, device, CL_DEVICE_VENDOR)), type_name(bits)))
    return tuple(found)


def boost_default_device(devices: tuple[OpenCLDevice, ...], env=os.environ) -> OpenCLDevice | None:
    """Boost.Compute's ``system::default_device()``: the first device matching every
    ``BOOST_COMPUTE_DEFAULT_*`` variable set (substrings; the type ``GPU`` or ``CPU``), else the first
    GPU, else the first CPU, else the first device; None without devices."""
    name, kind, platform, vendor = (env.get(k) for k in BOOST_DEFAULTS)

    def matches(d: OpenCLDevice) -> bool:  # Boost tests "GPU".find(type), so the type may be a part of it
        return ((name is None or name in d.name) and (kind is None or kind not in "GPU" or d.is_gpu)
                and (kind is None or kind not in "CPU" or d.type == "cpu")
                and (platform is None or platform in d.platform) and (vendor is None or vendor in d.vendor))

    chosen = [d for d in devices if matches(d)] if any(v is not None for v in (name, kind, platform, vendor)) else []
    ordered = chosen + [d for d in devices if d.is_gpu] + [d for d in devices if d.type == "cpu"] + list(devices)
    return ordered[0] if ordered else None


def lightgbm_opencl_device(params: dict, devices: tuple[OpenCLDevice, ...] | None = None) -> OpenCLDevice | None:
    """The device LightGBM's OpenCL learner trains on with ``params``: ``gpu_platform_id`` and
    ``gpu_device_id`` when both are ≥ 0 and exist, else :func:`boost_default_device`."""
    devices = opencl_devices() if devices is None else devices
    p, d = int(params.get("gpu_platform_id", -1)), int(params.get("gpu_device_id", -1))
    asked = [x for x in devices if (x.platform_id, x.device_id) == (p, d)] if p >= 0 and d >= 0 else []
    return asked[0] if asked else boost_default_device(devices)


def cuda_device_name(ordinal: int = 0) -> str | None:
    """The name of CUDA device ``ordinal`` from the driver (``libcuda``), or None without one."""
    try:
        lib = ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
    except OSError:
        return None
    device, buf = ctypes.c_int(0), ctypes.create_string_buffer(256)
    if lib.cuInit(0) or lib.cuDeviceGet(ctypes.byref(device), ordinal) or lib.cuDeviceGetName(buf, 256, device):
        return None
    return _text(buf.raw)
