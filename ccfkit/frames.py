"""A batch of frames as one flat array and where each frame starts in it.

Frames read into memory are a ``(B, H, W)`` array; frames memory-mapped
from a file lie at irregular places in the mapping (HDF5 puts its index
blocks between chunks). :class:`FrameBlock` covers both without a copy: one
flat float32 array and the element offset of each frame. The per-pixel
kernels of :mod:`ccfkit.noise` take it, so that a statistics pass reads the
file's pages directly and the noisy frames are written in one pass from
them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FrameBlock"]


@dataclass(frozen=True)
class FrameBlock:
    """Frames ``b = 0 .. B-1``: ``pixels[starts[b] : starts[b] + H * W]``, C order.

    Attributes
    ----------
    pixels : (M,) float32 ndarray
        Flat, C-contiguous; may be a read-only view of a memory-mapped file
        (the mapping lives as long as this array).
    starts : (B,) int64 ndarray
        Element offset of each frame in ``pixels``.
    frame_shape : (int, int)
        ``(H, W)``.
    """

    pixels: np.ndarray
    starts: np.ndarray
    frame_shape: tuple[int, int]

    @classmethod
    def of(cls, images: np.ndarray) -> FrameBlock:
        """The block of a ``(B, H, W)`` array (a float32 C-contiguous one is not copied)."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.ndim != 3:
            raise ValueError(f"expected (B, H, W) frames, got shape {images.shape}")
        frame_pixels = images.shape[1] * images.shape[2]
        starts = np.arange(images.shape[0], dtype=np.int64) * frame_pixels
        return cls(images.reshape(-1), starts, (images.shape[1], images.shape[2]))

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def frame_pixels(self) -> int:
        return self.frame_shape[0] * self.frame_shape[1]

    def to_array(self, out: np.ndarray | None = None) -> np.ndarray:
        """The frames as a ``(B, H, W)`` float32 array (a copy, into ``out`` if given)."""
        if out is None:
            out = np.empty((len(self), *self.frame_shape), dtype=np.float32)
        flat = out.reshape(len(self), self.frame_pixels)
        for b, start in enumerate(self.starts.tolist()):
            flat[b] = self.pixels[start : start + self.frame_pixels]
        return out
