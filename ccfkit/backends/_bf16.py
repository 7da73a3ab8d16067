"""The full map's product in bfloat16 with float32 accumulation, through PyTorch.

``polar @ roll(polar, -d).T`` is 97 % of a map's arithmetic. Hardware with
bfloat16 matrix units (Intel AMX-BF16, AVX512-BF16; NVIDIA tensor cores from
compute capability 8.0) runs it several times faster than float32, rounding
each input to 8 significant bits and summing in float32 (docs/ccf.md,
"Precision"). PyTorch is the well-kept library that reaches those units on
both (oneDNN on the CPU, cuBLAS on the GPU); the arrays cross to it without a
copy (``torch.from_numpy``, DLPack for CuPy).
"""

from __future__ import annotations

import contextlib
import functools
import logging

import numpy as np

from ..ccf import Precision

__all__ = [
    "aligned_empty",
    "effective_precision",
    "hardware_reason",
    "lag_product_bf16",
    "product_of_bits",
    "torch_threads_here",
]

logger = logging.getLogger(__name__)

#: CPU flags (Linux ``/proc/cpuinfo``) of bfloat16 matrix hardware.
CPU_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def hardware_reason(device: str) -> str | None:
    """Why bf16 products would not run on bf16 hardware here; None when they would.

    Parameters
    ----------
    device : {"cpu", "cuda"}
        Where the product runs (the backend's arrays' device).
    """
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if device == "cuda":
        if not torch.cuda.is_available():
            return "PyTorch sees no CUDA device"
        major, minor = torch.cuda.get_device_capability()
        if major < 8:
            return f"the GPU (compute capability {major}.{minor}) has no bf16 tensor cores"
        return None
    if not CPU_BF16_FLAGS & _cpu_flags():
        return "this CPU has neither AMX-BF16 nor AVX512-BF16"
    return None


def effective_precision(precision: Precision | str, device: str) -> Precision:
    """The precision a product asked for ``precision`` runs in on ``device``.

    ``bf16`` where the hardware has it; otherwise ``float32`` (emulated bf16
    would be slower than float32 and no more accurate), with a log line the
    first time. ``bf16-emulated`` and ``float32`` run as asked.
    """
    precision = Precision(precision)
    if precision is Precision.BF16 and _bf16_missing(device):
        return Precision.FLOAT32
    return precision


@functools.cache
def _bf16_missing(device: str) -> bool:
    """Whether ``device`` lacks bf16 hardware (asked, and logged, once per process)."""
    reason = hardware_reason(device)
    if reason is not None:
        logger.warning("precision bf16 asked, but %s: the product runs in float32", reason)
    return reason is not None


def lag_product_bf16(rows, shift: int, xp=np):
    """``rows @ roll(rows, -shift).T`` with bfloat16 inputs and float32 sums.

    Runs wherever PyTorch runs, bf16 hardware or not (without it PyTorch
    emulates: correct and slow; :func:`effective_precision` decides whether a
    build uses it).

    Parameters
    ----------
    rows : (B, Q, P) float array
        NumPy (CPU) or CuPy (GPU) polar values.
    shift : int
        Angular shift ``d`` in samples.
    xp : module
        ``numpy`` or ``cupy``: the module of ``rows`` and of the result.

    Returns
    -------
    (B, Q, Q) float32 array of ``xp``
        ``out[b, i, j] = sum_p bf16(rows[b, i, p]) bf16(rows[b, j, p + shift])``,
        summed in float32. The CPU product returns bfloat16 (PyTorch has no
        float32 output there), so each entry is rounded once more to 8
        significant bits; the GPU's is float32 (docs/ccf.md, "Precision").
    """
    import torch

    if xp is np:
        tensor = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
    else:
        tensor = torch.from_dlpack(xp.ascontiguousarray(rows, dtype=np.float32))
    left = tensor.to(torch.bfloat16)
    right = torch.roll(left, -shift, dims=-1) if shift else left
    product = _bmm_float32(left, right.mT)
    if xp is np:
        return product.numpy()
    return xp.from_dlpack(product)


def _bmm_float32(left, right):
    """Batched ``left @ right`` of bf16 tensors as float32 (float32 output where offered)."""
    import torch

    if _has_float32_output(left.device.type):
        return torch.bmm(left, right, out_dtype=torch.float32)
    return torch.bmm(left, right).float()


@functools.cache
def _has_float32_output(device_type: str) -> bool:
    """Whether ``torch.bmm(..., out_dtype=float32)`` runs for bf16 on this device type."""
    import torch

    probe = torch.ones((1, 2, 2), dtype=torch.bfloat16, device=device_type)
    try:
        torch.bmm(probe, probe, out_dtype=torch.float32)
    except (RuntimeError, NotImplementedError, TypeError):  # no such kernel on this device
        return False
    return True


def aligned_empty(shape: tuple[int, ...], dtype, alignment: int = 64) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ``alignment``-byte boundary.

    oneDNN takes a slower path for operands that are not 64-byte aligned
    (NumPy aligns to 16): measured 0.085 against 0.053 ms per product of one
    (224, 512) bfloat16 image, docs/performance.md.
    """
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(size + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start : start + size].view(dtype).reshape(shape)


def product_of_bits(left, right, out) -> None:
    """``out[b] = left[b] @ right[b].T`` of bfloat16 bit arrays, float32 sums, by PyTorch.

    Parameters
    ----------
    left, right : (B, Q, P) uint16, C-contiguous
        bfloat16 numbers as their bits (the upper half of a float32), best
        64-byte aligned (:func:`aligned_empty`).
    out : (B, Q, Q) uint16, C-contiguous, out
        The products as bfloat16 bits (PyTorch's CPU product returns bfloat16:
        each float32 sum is rounded once more, docs/ccf.md "Precision").
    """
    import torch

    def as_bf16(bits):
        return torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16)

    torch.bmm(as_bf16(left), as_bf16(right).mT, out=as_bf16(out))


@contextlib.contextmanager
def torch_threads_here(threads: int):
    """PyTorch's CPU operations on the calling thread use ``threads`` OpenMP threads meanwhile.

    OpenMP's thread count is a per-thread setting: this leaves other threads,
    and PyTorch's process-wide ``torch.set_num_threads``, as they are.
    """
    import torch

    torch.get_num_threads()  # PyTorch sets a new thread's OpenMP threads on its first call
    with _openmp_controller().limit(limits=threads, user_api="openmp"):
        yield


@functools.cache
def _openmp_controller():
    """A thread-pool controller that knows PyTorch's OpenMP library (created after importing it)."""
    import torch  # noqa: F401  (its OpenMP library must be loaded before the scan)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()
