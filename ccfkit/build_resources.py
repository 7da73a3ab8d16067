"""What a build will need, memory and disk, estimated before anything is created (docs/build.md).

A build whose arrays cannot fit in memory used to fail half-way with NumPy's
``_ArrayMemoryError`` and leave an incomplete store; one whose store cannot
fit on the disk failed at the first full chunk. Both are known from the
options and the input's shape, so the build refuses them first, with the
figures, and says how large a large store will be.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .io.source import InputError

__all__ = [
    "LARGE_STORE",
    "BuildFootprint",
    "available_memory",
    "check_resources",
    "format_bytes",
]

logger = logging.getLogger(__name__)

#: A store at least this large (bytes) is announced before it is written.
LARGE_STORE = 1 << 30

#: Bytes per polar sample of a plan and its tables, at their peak while the plan is
#: made: float64 positions, offsets and weights, int64 indices (:mod:`ccfkit.polar`),
#: and a backend's own copy (int32/float32 tables, or the float64 ones of NumPy).
_PLAN_BYTES_PER_SAMPLE = 256
#: Bytes per polar sample of one image in flight in the engine: its values and
#: validity, and the NumPy reference's (B, Q, P, 4) float64 gathers.
_ENGINE_BYTES_PER_SAMPLE = 48
#: Images a backend holds in flight at once (the NumPy/CuPy batch).
_IMAGES_IN_FLIGHT = 16


@dataclass(frozen=True)
class BuildFootprint:
    """The sizes a build's options and input imply (bytes).

    Attributes
    ----------
    n_frames, frame_shape : int, (int, int)
        The input.
    q_bins, phi_bins, channels : int
        The maps: ``channels`` maps of Q x Q per frame, from Q x P polar samples.
    chunk_frames : int
        Frames per task.
    image_size : int or None
        Side of the stored images, if any.
    map_itemsize : int
        Bytes per stored map value (4 for float32, 2 for float16).
    workers : int
        Tasks that run at once.
    """

    n_frames: int
    frame_shape: tuple[int, int]
    q_bins: int
    phi_bins: int
    channels: int
    chunk_frames: int
    image_size: int | None
    map_itemsize: int
    workers: int

    @property
    def store_bytes(self) -> int:
        """The stored maps and images, uncompressed."""
        per_frame = self.channels * self.q_bins**2 * self.map_itemsize
        per_frame += 4 * (self.image_size or 0) ** 2
        return self.n_frames * per_frame

    @property
    def memory_parts(self) -> dict[str, int]:
        """Peak memory by part: the plan, the tasks running at once, the writes queued."""
        height, width = self.frame_shape
        samples = self.q_bins * self.phi_bins
        frames = min(self.chunk_frames, self.n_frames)
        maps = frames * (self.channels * self.q_bins**2 * 4 + 4 * (self.image_size or 0) ** 2)
        in_flight = min(frames, _IMAGES_IN_FLIGHT)
        engine = in_flight * (samples * _ENGINE_BYTES_PER_SAMPLE + 24 * self.q_bins**2)
        task = 2 * frames * height * width * 4 + maps + engine  # the frames read, noisy
        return {
            "polar plan": samples * _PLAN_BYTES_PER_SAMPLE,
            "map tasks": self.workers * task,
            "queued writes": self.workers * maps,
        }

    @property
    def memory_bytes(self) -> int:
        return sum(self.memory_parts.values())


def available_memory() -> int | None:
    """Memory this process may still use (bytes): the OS's available memory, or the cgroup's.

    ``MemAvailable`` of ``/proc/meminfo`` (what can be allocated without
    swapping), bounded by a cgroup v2 limit (``memory.max - memory.current``)
    when one applies; None where neither can be read.
    """
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            found.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    if not found and hasattr(os, "sysconf"):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError):
            pass
    return min(found) if found else None


def check_resources(
    footprint: BuildFootprint, out: str | Path, *, compressed: bool, fresh: bool = True
) -> None:
    """Refuse a build that cannot fit; announce a large store.

    Parameters
    ----------
    footprint : BuildFootprint
    out : str or Path
        The store's directory (its file system's free space is checked).
    compressed : bool
        The maps are compressed: their size on disk is not known in advance,
        so a store larger than the free space is announced, not refused.
    fresh : bool
        ``out`` does not exist yet. A store being resumed or replaced holds
        some of that space already: then too a shortfall is announced, not refused.

    Raises
    ------
    InputError
        The memory the build needs exceeds what is available, or the
        uncompressed store exceeds the free disk space; the message gives
        the figures and the options that set them.
    """
    needed, available = footprint.memory_bytes, available_memory()
    if available is not None and needed > available:
        parts = footprint.memory_parts
        largest = max(parts, key=parts.get)
        raise InputError(
            f"this build needs about {format_bytes(needed)} of memory ({largest}: "
            f"{format_bytes(parts[largest])}), {format_bytes(available)} is available: "
            "lower --q-bins, --phi-bins, --chunk, --image-size or --workers"
        )
    size = footprint.store_bytes
    free = _free_space(Path(out))
    if free is not None and size > free and not compressed and fresh:
        raise InputError(
            f"{out}: the store needs {format_bytes(size)}, {format_bytes(free)} is free there"
        )
    if size >= LARGE_STORE or (free is not None and size > free):
        logger.warning(
            "%s will hold about %s (%d frames of %d x %d x %d maps%s)%s", out,
            format_bytes(size), footprint.n_frames, footprint.channels, footprint.q_bins,
            footprint.q_bins, " and images" if footprint.image_size else "",
            "" if compressed else ", uncompressed",
        )  # fmt: skip


def format_bytes(count: float) -> str:
    """``count`` bytes as "3.8 GB" (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def _free_space(path: Path) -> int | None:
    """Free bytes on the file system that will hold ``path`` (its nearest existing parent)."""
    path = path.absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None
