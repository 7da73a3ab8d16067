"""Reading a ccfkit store for training: checks, the split, a chunk-aware loader.

The store (docs/store-layout.md) holds ``ccf`` (N, Q, Q) and optionally
``images`` (N, S, S), chunked by ``c`` frames, and ``labels`` (N, C) uint8
with the attributes ``names`` and ``exclusive_groups``.

Reading one frame out of a compressed Zarr chunk decodes the whole chunk, so
the loader is chunk-aware:

* :class:`ChunkBatchSampler` shuffles *chunks*, pools the wanted frames of a
  few consecutive chunks (``group_chunks``), shuffles those frames and cuts
  them into batches. Each chunk is then decoded about once per epoch and
  worker instead of once per frame.
* :class:`StoreDataset` takes a whole batch key ``(epoch, indices)``, reads the
  touched chunks (keeping a few decoded chunks in a small per-process cache)
  and returns the batch as tensors. The Zarr group is opened lazily in the
  process that reads, so DataLoader workers (started with ``spawn``) never
  share a handle across a fork. The whole store is never in memory.

Per-sample indices are NumPy arrays (no Python lists of objects that the
workers would copy on access).
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "ChunkBatchSampler",
    "DataError",
    "InputKind",
    "Normalize",
    "StoreDataset",
    "StoreInfo",
    "flip_masks",
    "inspect_store",
    "load_split",
    "loader_throughput",
    "make_loader",
    "model_inputs",
    "open_store",
    "resolve_normalize",
    "save_split",
    "split_three_ways",
    "subsample",
]


class DataError(RuntimeError):
    """The store cannot be used for training as asked (one-line message)."""


class InputKind(str, enum.Enum):
    """Which array of the store the network sees."""

    CCF = "ccf"
    IMAGES = "images"


class Normalize(str, enum.Enum):
    """Per-frame input scaling: ``max`` divides every frame by its max |value|."""

    AUTO = "auto"  # none for CCF maps (already scaled by the build), max for images
    NONE = "none"
    MAX = "max"


def resolve_normalize(normalize: str, input_kind: str) -> str:
    """The concrete per-frame scaling for ``normalize`` and the input kind.

    Parameters
    ----------
    normalize : str
        ``"auto"``, ``"none"`` or ``"max"``.
    input_kind : str
        ``"ccf"`` or ``"images"``.

    Returns
    -------
    str
        ``"none"`` or ``"max"``: ``"auto"`` is ``"none"`` for CCF maps (already
        scaled by the build) and ``"max"`` for images; the others are kept.
    """
    normalize = Normalize(normalize)
    if normalize is not Normalize.AUTO:
        return normalize.value
    return "max" if InputKind(input_kind) is InputKind.IMAGES else "none"


_MASK64 = (1 << 64) - 1


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """The SplitMix64 output function on uint64 (wrapping arithmetic), elementwise."""
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def flip_masks(seed: int, epoch: int, indices) -> np.ndarray:
    """Horizontal and vertical flip decisions, each true with probability 1/2.

    A counter-based hash (SplitMix64 rounds) of ``(seed, epoch, frame, axis)``:
    the decision for a frame depends on nothing else, so it is the same for any
    batch the frame is in and any number of workers.

    Parameters
    ----------
    seed, epoch : int
        Any integers (taken modulo 2**64).
    indices : (B,) int array
        Frame indices.

    Returns
    -------
    (B, 2) bool array
        Column 0: flip horizontally (reverse the last axis); column 1: vertically.
    """
    key = np.array([int(seed) & _MASK64], dtype=np.uint64)
    key = _splitmix64(_splitmix64(key) ^ np.uint64(int(epoch) & _MASK64))
    frames = np.asarray(indices, dtype=np.int64).astype(np.uint64)
    per_frame = _splitmix64(key ^ frames)[:, None]
    bits = _splitmix64(per_frame ^ np.arange(1, 3, dtype=np.uint64)) >> np.uint64(63)
    return bits.astype(bool)


@dataclass(frozen=True)
class StoreInfo:
    """What the trainer needs to know about a store (read from it, never passed as flags)."""

    path: str
    n_frames: int
    chunk_frames: int
    label_names: tuple[str, ...]
    exclusive_groups: tuple[tuple[str, ...], ...]
    shapes: dict  # array name -> per-frame shape, for "ccf" and "images" when present
    has_labels: bool

    def channels(self, input_kind: str) -> int:
        """Input channels of ``input_kind``: 1 for (H, W) frames, C for (C, H, W) maps."""
        shape = self.shapes[input_kind]
        return 1 if len(shape) == 2 else int(shape[0])


def _open(path) -> zarr.Group:  # noqa: F821
    import zarr

    return zarr.open_group(str(path), mode="r")


def open_store(path, *, whole: bool = False) -> zarr.Group:  # noqa: F821
    """Open a ccfkit store read-only through :func:`ccfkit.store.open_store`.

    Parameters
    ----------
    path : str or Path
        The store.
    whole : bool
        Also run the cheap checks of :func:`ccfkit.store.check_store` (every
        array the layout requires, as it says, and every chunk there).

    Returns
    -------
    zarr.Group
        The store's root group.

    Raises
    ------
    DataError
        Missing path, not a Zarr store, not a ccfkit store, a newer schema, or
        (``whole``) a store with an array or chunk missing
        (``ccfkit.store.StoreError`` as a one-line message).
    """
    from ccfkit.store import StoreError, check_store
    from ccfkit.store import open_store as ccfkit_open_store

    try:
        group = ccfkit_open_store(path)
        if whole:
            check_store(group)
        return group
    except StoreError as error:
        raise DataError(" ".join(str(error).split())) from error


def inspect_store(path, *, need_labels: bool = True, input_kind: str | None = None) -> StoreInfo:
    """Open ``path`` and check it can be trained on / predicted from.

    Raises
    ------
    DataError
        Whatever :func:`open_store` refuses (``whole``), a store whose
        ``status`` is not ``"complete"``, no ``ccf`` array, no ``labels``
        array (when ``need_labels``), label names that are not one per
        column, or no ``input_kind`` array.
    """
    path = Path(path)
    group = open_store(path, whole=True)
    status = group.attrs.get("status")
    if status != "complete":
        raise DataError(
            f"{path}: store status is {status!r}, not 'complete' "
            "(finish it with `ccfkit build ... --resume`)"
        )
    keys = set(group.array_keys())
    if "ccf" not in keys:
        raise DataError(f"{path}: no 'ccf' array")
    has_labels = "labels" in keys
    if need_labels and not has_labels:
        raise DataError(f"{path}: the store has no labels (its input had none); cannot train")
    if input_kind is not None and input_kind not in keys:
        hint = " (build it with --keep-images)" if input_kind == "images" else ""
        raise DataError(f"{path}: the store has no {input_kind!r} array{hint}")
    ccf = group["ccf"]
    names: tuple[str, ...] = ()
    groups: tuple[tuple[str, ...], ...] = ()
    if has_labels:
        labels = group["labels"]
        c = int(labels.shape[1])
        names = tuple(labels.attrs.get("names", [f"class{i}" for i in range(c)]))
        if len(names) != c:
            raise DataError(f"{path}: 'labels' has {c} columns but {len(names)} label names")
        groups = tuple(tuple(g) for g in labels.attrs.get("exclusive_groups", []))
    shapes = {k: tuple(group[k].shape[1:]) for k in ("ccf", "images") if k in keys}
    return StoreInfo(
        path=str(path.resolve()),
        n_frames=int(ccf.shape[0]),
        chunk_frames=int(ccf.chunks[0]),
        label_names=names,
        exclusive_groups=groups,
        shapes=shapes,
        has_labels=has_labels,
    )


def _split_size(fraction: float, n: int) -> int:
    """``round(fraction n)``, at least 1 when ``fraction > 0`` and ``n > 1``."""
    size = round(fraction * n)
    return max(size, 1 if fraction > 0 and n > 1 else 0)


def split_three_ways(
    n: int, validation_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """A seeded train / validation / test split of ``range(n)`` (docs/training.md).

    One seeded permutation of ``range(n)``: its last ``round(test_fraction n)``
    entries are the test set, the ``round(validation_fraction n)`` before them
    the validation set, the rest the training set. With ``test_fraction = 0``
    it is the 85/15 split ``trainer fit`` has always made (the last
    ``round(eval_fraction n)`` of the permutation are the validation set).

    Parameters
    ----------
    n : int
        Number of frames (store rows).
    validation_fraction, test_fraction : float
        Fractions of ``n``, each in [0, 1), together below 1.
    seed : int
        Seed of the permutation: the split depends on ``(n, fractions, seed)`` only.

    Returns
    -------
    dict
        ``{"train", "validation", "test"}``: disjoint, sorted int64 arrays of
        rows (sorted so that reading is chunk-friendly) whose union is ``range(n)``.

    Raises
    ------
    ValueError
        A fraction outside [0, 1), fractions that leave no training frame.
    """
    for name, value in (("validation", validation_fraction), ("test", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} fraction must be in [0, 1), got {value}")
    n_test = _split_size(test_fraction, n)
    n_validation = _split_size(validation_fraction, n)
    if n_test + n_validation >= n:
        raise ValueError(
            f"validation {validation_fraction} and test {test_fraction} fractions of {n} "
            "frames leave no training frame"
        )
    order = np.random.default_rng(seed).permutation(n)
    cut = n - n_test - n_validation
    parts = {
        "train": order[:cut],
        "validation": order[cut : n - n_test],
        "test": order[n - n_test :],
    }
    return {key: np.sort(rows).astype(np.int64) for key, rows in parts.items()}


def subsample(rows, fraction: float, seed: int) -> np.ndarray:
    """The first ``round(fraction len(rows))`` rows of a seeded permutation, sorted.

    For one ``seed`` a smaller fraction's rows are a subset of a larger one's
    (nested training sets, the paper's Table 5).

    Parameters
    ----------
    rows : (M,) int array
    fraction : float
        In (0, 1]; 1 returns all rows.
    seed : int

    Returns
    -------
    (K,) int64 array
        Sorted, ``K = max(1, round(fraction M))``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if not 0 < fraction <= 1:
        raise ValueError(f"train fraction must be in (0, 1], got {fraction}")
    keep = max(1, round(fraction * len(rows))) if len(rows) else 0
    order = np.random.default_rng([seed, 1]).permutation(len(rows))
    return np.sort(rows[order[:keep]])


def save_split(path, split: dict[str, np.ndarray], seed: int) -> None:
    """Write a split as ``.npz``: ``train``, ``eval`` (validation), ``test``, ``seed``.

    ``eval`` is the name the run directory has always used for the split that
    picks the best checkpoint. Written atomically (``ccfkit.atomic``).
    """
    from ccfkit.atomic import atomic_output

    with atomic_output(Path(path), overwrite=True) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            train=split["train"],
            eval=split["validation"],
            test=split.get("test", np.zeros(0, dtype=np.int64)),
            seed=seed,
        )


def load_split(path) -> dict[str, np.ndarray]:
    """Read a split written by :func:`save_split` (an older one without ``test``: empty test).

    Returns
    -------
    dict
        ``{"train", "validation", "test"}`` int64 arrays.

    Raises
    ------
    DataError
        Not a readable split file, or sets that overlap.
    """
    try:
        with np.load(path) as data:
            split = {
                "train": data["train"],
                "validation": data["eval"],
                "test": data["test"] if "test" in data else np.zeros(0),
            }
    except (OSError, KeyError, ValueError) as error:
        raise DataError(f"{path}: not a split file ({error})") from error
    split = {key: np.asarray(rows, dtype=np.int64) for key, rows in split.items()}
    together = np.concatenate(list(split.values()))
    if len(np.unique(together)) != len(together):
        raise DataError(f"{path}: the train, validation and test sets overlap")
    return split


def _pool_of(chunk_of: np.ndarray, group_chunks: int, rng: np.random.Generator) -> np.ndarray:
    """Pool number of each frame: its chunk's place in a shuffled chunk list // ``group_chunks``.

    Parameters
    ----------
    chunk_of : (M,) int array
        The chunk of each frame.
    group_chunks : int
        Chunks per pool.
    rng : numpy.random.Generator
        Shuffles the sorted distinct chunks (one ``rng.shuffle`` call).

    Returns
    -------
    (M,) int64 array
        Pools numbered from 0 in the shuffled order; every number up to the
        largest is used.
    """
    chunks, chunk_rank = np.unique(chunk_of, return_inverse=True)
    shuffled = chunks.copy()
    rng.shuffle(shuffled)
    place = np.empty(len(chunks), dtype=np.int64)
    place[np.searchsorted(chunks, shuffled)] = np.arange(len(chunks))
    return place[chunk_rank.reshape(-1)] // group_chunks


class ChunkBatchSampler(torch.utils.data.Sampler):
    """Batches of frame indices, shuffled chunk-wise; yields ``(epoch, indices)`` keys.

    Parameters
    ----------
    indices : (M,) int array
        The frames to draw from (e.g. the training split).
    chunk_frames : int
        The store's chunk length.
    batch_size : int
        The *global* batch size. Under DDP (``world_size > 1``) every global
        batch is cut into ``world_size`` interleaved slices and this rank gets
        ``batch[rank::world_size]``, so the ranks together see the same
        batches as one process.
    shuffle : bool
        Chunk-wise shuffling (training); False gives the frames in order.
    group_chunks : int
        Chunks pooled before shuffling frames: larger mixes better, decodes more.
    seed : int
        The order of epoch ``e`` depends only on ``(seed, e)``: resumable.
    drop_last : bool
        Drop a last incomplete batch (training, so BatchNorm never sees 1 frame).
    """

    def __init__(
        self,
        indices,
        chunk_frames: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        group_chunks: int = 4,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.chunk_frames = int(chunk_frames)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.group_chunks = max(1, int(group_chunks))
        self.seed = int(seed)
        self.drop_last = drop_last
        self.rank, self.world_size = int(rank), int(world_size)
        if self.batch_size < self.world_size:
            raise ValueError(
                f"batch size {batch_size} is smaller than the number of processes {world_size}"
            )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches(self) -> list[np.ndarray]:
        """The global batches of the current epoch."""
        idx = self.indices
        if self.shuffle and len(idx):
            rng = np.random.default_rng([self.seed, self.epoch])
            pool_of = _pool_of(idx // self.chunk_frames, self.group_chunks, rng)
            order = np.argsort(pool_of, kind="stable")  # pools in turn, each in `idx` order
            bounds = np.cumsum(np.bincount(pool_of))[:-1]
            idx = np.concatenate([rng.permutation(p) for p in np.split(idx[order], bounds)])
        cuts = list(range(0, len(idx), self.batch_size))
        out = [idx[s : s + self.batch_size] for s in cuts]
        if out and self.drop_last and len(out[-1]) < self.batch_size:
            out.pop()
        return out

    def __iter__(self):
        for batch in self.batches():
            part = batch[self.rank :: self.world_size]
            if len(part):
                yield (self.epoch, part)

    def __len__(self) -> int:
        """Batches this rank yields per epoch (arithmetic: the order does not change it)."""
        full, rest = divmod(len(self.indices), self.batch_size)
        # Every full batch has >= world_size frames, so every rank gets a slice of it;
        # the last partial batch (when kept) reaches only the ranks below its length.
        return full + int(rest > 0 and not self.drop_last and self.rank < rest)


class StoreDataset(torch.utils.data.Dataset):
    """Batches read from a store; keys are ``(epoch, indices)`` from :class:`ChunkBatchSampler`.

    ``dataset[(epoch, indices)]`` returns ``(x, y, indices)``: ``x`` float32
    (B, 1, H, W), ``y`` float32 (B, C) (zeros when the store has no labels),
    ``indices`` int64 (B,).

    Parameters
    ----------
    path : str
        The store.
    input_kind : str
        ``"ccf"`` or ``"images"``.
    flips : bool
        Random horizontal and vertical flips, each with probability 1/2, a
        function of ``(seed, epoch, frame)`` alone (:func:`flip_masks`): the
        same for any worker count and any batch the frame is in.
    normalize : str
        ``"max"`` (per frame, divide by max |x|), ``"none"``, or ``"auto"``
        (:func:`resolve_normalize`: ``"max"`` for images, ``"none"`` for CCF
        maps); the attribute ``normalize`` holds the resolved value.
    seed : int
        Seed of the flips.
    cache_chunks : int
        Decoded chunks kept per process.
    labels : (N, C) uint8 array, optional
        Labels of every row used instead of the store's ``labels`` (a label
        table, :meth:`trainer.label_table.LabelTable.dense`).
    """

    def __init__(
        self,
        path,
        input_kind: str = "ccf",
        *,
        flips: bool = False,
        normalize: str = "auto",
        seed: int = 0,
        cache_chunks: int = 8,
        labels: np.ndarray | None = None,
    ):
        self.path = str(path)
        self.input_kind = InputKind(input_kind).value
        self.flips = bool(flips)
        self.normalize = resolve_normalize(normalize, self.input_kind)
        self.seed = int(seed)
        self.cache_chunks = int(cache_chunks)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.uint8)
        self.__dict__.update(self._no_handles())

    @staticmethod
    def _no_handles() -> dict:
        """The per-process state before the store is opened: no handles, no decoded chunks."""
        return {"_group": None, "_arrays": {}, "_has_labels": None, "_cache": OrderedDict()}

    def __getstate__(self):  # a worker gets the recipe, never an open handle
        return {**self.__dict__, **self._no_handles()}

    @property
    def group(self):
        """The store's root group, opened on first use in this process."""
        if self._group is None:
            self._group = _open(self.path)
        return self._group

    @property
    def has_labels(self) -> bool:
        """Whether the store has a ``labels`` array (asked once per process)."""
        if self._has_labels is None:
            self._has_labels = "labels" in self.group
        return self._has_labels

    def array(self, name: str):
        """The Zarr array ``name``, its handle kept (metadata is read once per process)."""
        handle = self._arrays.get(name)
        if handle is None:
            handle = self._arrays[name] = self.group[name]
        return handle

    def _chunk(self, name: str, chunk: int) -> np.ndarray:
        key = (name, chunk)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        from ccfkit.store import read_checked

        array = self.array(name)
        c = array.chunks[0]
        data = read_checked(array, chunk * c, (chunk + 1) * c)  # a damaged chunk: StoreError
        self._cache[key] = data
        while len(self._cache) > self.cache_chunks:
            self._cache.popitem(last=False)
        return data

    def read(self, name: str, indices: np.ndarray) -> np.ndarray:
        """Rows ``indices`` of array ``name``, decoding each touched chunk once."""
        array = self.array(name)
        c = array.chunks[0]
        out = np.empty((len(indices),) + tuple(array.shape[1:]), dtype=array.dtype)
        chunk_of = indices // c
        for chunk in np.unique(chunk_of):
            where = np.flatnonzero(chunk_of == chunk)
            out[where] = self._chunk(name, int(chunk))[indices[where] - chunk * c]
        return out

    def __getitem__(self, key):
        epoch, indices = key
        indices = np.ascontiguousarray(indices, dtype=np.int64)
        x = model_inputs(self.read(self.input_kind, indices), self.normalize)
        if self.flips:
            x = _apply_flips(x, flip_masks(self.seed, epoch, indices))
        if self.labels is not None:
            y = self.labels[indices].astype(np.float32)
        elif self.has_labels:
            y = self.read("labels", indices).astype(np.float32)
        else:
            y = np.zeros((len(indices), 0), dtype=np.float32)
        return (
            torch.from_numpy(np.ascontiguousarray(x)),
            torch.from_numpy(y),
            torch.from_numpy(indices),
        )


def model_inputs(frames: np.ndarray, normalize: str) -> np.ndarray:
    """A batch as the model takes it: (B, C, H, W) float32, scaled per frame.

    Parameters
    ----------
    frames : (B, H, W) or (B, C, H, W) array
        Maps or images as stored (one channel, or one per angular order).
    normalize : {"none", "max"}
        A resolved :func:`resolve_normalize`: ``"max"`` divides each frame by
        its largest absolute value.

    Returns
    -------
    (B, C, H, W) float32 ndarray (a new array)
    """
    x = np.array(frames, dtype=np.float32)
    if x.ndim == 3:  # one channel: (B, H, W) -> (B, 1, H, W)
        x = x[:, None]
    if normalize == "max":
        scale = np.abs(x).reshape(len(x), -1).max(axis=1)
        x /= np.where(scale > 0, scale, 1.0)[:, None, None, None]
    return x


def _apply_flips(x: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Reverse the last axis of frames ``masks[:, 0]`` and the one before of ``masks[:, 1]``.

    ``x`` (B, ..., H, W) is changed in place and returned.
    """
    flip_h, flip_v = masks[:, 0], masks[:, 1]
    if flip_h.any():
        x[flip_h] = x[flip_h][..., ::-1]
    if flip_v.any():
        x[flip_v] = x[flip_v][..., ::-1, :]
    return x


def make_loader(dataset: StoreDataset, sampler: ChunkBatchSampler, workers: int, *, pin=False):
    """A DataLoader over whole-batch keys; workers start with ``spawn`` (no forked handles)."""
    kwargs = {}
    if workers > 0:
        kwargs = {
            "multiprocessing_context": "spawn",
            "persistent_workers": True,
            "prefetch_factor": 4,
        }
    return torch.utils.data.DataLoader(
        dataset,
        sampler=sampler,
        batch_size=None,  # the sampler's keys are whole batches
        num_workers=workers,
        pin_memory=pin,
        **kwargs,
    )


def loader_throughput(
    path,
    input_kind: str = "ccf",
    *,
    batch_size: int = 48,
    workers: int = 2,
    batches: int = 30,
    flips: bool = False,
    normalize: str = "auto",
) -> dict:
    """Samples per second of the loader alone (first batch, i.e. worker start-up, excluded).

    Returns ``{"samples_per_s", "batches", "startup_s"}``.
    """
    info = inspect_store(path, need_labels=False, input_kind=input_kind)
    dataset = StoreDataset(path, input_kind, flips=flips, normalize=normalize)
    sampler = ChunkBatchSampler(np.arange(info.n_frames), info.chunk_frames, batch_size)
    loader = make_loader(dataset, sampler, workers)
    t0 = time.perf_counter()
    seen = 0
    start = None
    done = 0
    epoch = 0
    while done < batches:
        sampler.set_epoch(epoch)
        for x, _, _ in loader:
            if start is None:
                start = time.perf_counter()
                startup = start - t0
                continue
            seen += len(x)
            done += 1
            if done >= batches:
                break
        epoch += 1
    elapsed = time.perf_counter() - start
    return {"samples_per_s": seen / elapsed, "batches": done, "startup_s": startup}
