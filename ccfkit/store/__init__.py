"""The Zarr v3 store of a build (docs/store-layout.md), one module per concern.

- :mod:`~ccfkit.store.layout`: the schema version, shapes, chunking, dtypes and codecs;
- :mod:`~ccfkit.store.lifecycle`: what an output path holds, the lock, creating a store
  (``creating`` -> ``incomplete``), opening one, marking it ``complete``;
- :mod:`~ccfkit.store.chunks`: writing whole chunks, each in one step (a map task's writers);
- :mod:`~ccfkit.store.chunk_files`: a plain array's chunk written as the file the Zarr v3
  specification defines (``bytes`` and ``crc32c``; byte for byte zarr's);
- :mod:`~ccfkit.store.direct`: zarr's local store with page-cache-bypassing writes
  (``--chunk-writer direct``);
- :mod:`~ccfkit.store.write_behind`: writes that run behind the computation;
- :mod:`~ccfkit.store.verify`: the arrays the layout requires, no chunk missing, every
  chunk's checksum and digest;
- :mod:`~ccfkit.store.recipe`: how a store's maps were made, read back.

Every public name is importable from ``ccfkit.store``. Importing it loads
zarr and NumPy, never Numba, Dask or the engine.
"""

from __future__ import annotations

from ..settings import WriteMethod
from .chunks import ChunkWriter, ChunkWriters, chunk_writer
from .direct import DirectLocalStore
from .layout import (
    COMPRESSORS,
    FRAME_CHECKS,
    SCHEMA_VERSION,
    StoreError,
    StoreLayout,
    dimension_names,
    layout_of,
)
from .lifecycle import (
    OutputState,
    check_not_input,
    create_store,
    foreign_entries,
    locked_store,
    mark_complete,
    open_store,
    output_state,
    pending_chunks,
    write_recorded,
)
from .recipe import StoreRecipe, read_recipe
from .verify import check_layout, check_store, chunk_key, read_checked, verify_store
from .write_behind import WriteBehind

__all__ = [
    "COMPRESSORS",
    "FRAME_CHECKS",
    "SCHEMA_VERSION",
    "ChunkWriter",
    "ChunkWriters",
    "DirectLocalStore",
    "OutputState",
    "StoreError",
    "StoreLayout",
    "StoreRecipe",
    "WriteBehind",
    "WriteMethod",
    "check_layout",
    "check_not_input",
    "check_store",
    "chunk_key",
    "chunk_writer",
    "create_store",
    "dimension_names",
    "foreign_entries",
    "layout_of",
    "locked_store",
    "mark_complete",
    "open_store",
    "output_state",
    "pending_chunks",
    "read_checked",
    "read_recipe",
    "verify_store",
    "write_recorded",
]
