"""What ``--overwrite`` may remove, and what ``verify_store`` must notice (docs/store-layout.md).

Stores are built by the command line from a small simulated CXI file (64 x
64 frames, 16 x 16 maps over 32 angles, chunks of 4 frames: 4 map tasks),
then copied and changed the way a user or a damaged disk would.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from ccfkit.cli import main
from ccfkit.simulate import SimulationConfig
from ccfkit.simulate.cxi_file import write_simulated
from ccfkit.store import StoreError, foreign_entries, verify_store

BUILD = ["--q-bins", "16", "--phi-bins", "32", "--chunk", "4", "--backend", "numpy", "--quiet",
         "--workers", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("input") / "small.cxi"
    write_simulated(path, SimulationConfig(size=64), 16, 1, progress=False)
    return path


def _built(tmp_path_factory, source, *extra) -> Path:
    out = tmp_path_factory.mktemp("store") / "maps.zarr"
    result = CliRunner().invoke(main, ["build", str(source), str(out), *BUILD, *extra])
    assert result.exit_code == 0, (result.output, result.exception)
    return out


@pytest.fixture(scope="module")
def plain(tmp_path_factory, source) -> Path:
    """A complete store without noise (stats written by the map tasks)."""
    return _built(tmp_path_factory, source)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory, source) -> Path:
    """A complete store with ``--noise mean`` (stats written once, by the statistics pass)."""
    return _built(tmp_path_factory, source, "--noise", "mean")


def copy_of(store: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(store, tmp_path / "maps.zarr"))


def snapshot(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def refused(result, *words: str) -> str:
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def swap(store: Path, first: str, second: str) -> None:
    """Exchange two chunk files (each intact: only their places are wrong)."""
    a, b = store / first, store / second
    data = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data)


def verified(store: Path) -> int:
    return verify_store(zarr.open_group(str(store), mode="r"))


# --------------------------------------------------------------------------
# --overwrite removes only what a build wrote
# --------------------------------------------------------------------------

USER_FILES = {
    "a file among the chunks of an array": "ccf/c/my_notes.txt",
    "a file among a chunk's files": "ccf/c/0/my_notes.txt",
    "a copy of a chunk under another name": "stats/c/0/0.bak",
    "a directory under digests/": "digests/my_analysis/result.csv",
    "an array this store has no images of": "images/zarr.json",
    "an array this store has no train ids of": "train_id/zarr.json",
    "a file named like a temporary one": "results.partial",
    "a temporary-looking file in an array": "ccf/draft.partial",
}


@pytest.mark.parametrize("entry", USER_FILES.values(), ids=USER_FILES.keys())
def test_overwrite_refuses_a_store_holding_a_file_the_build_did_not_write(tmp_path, source,
                                                                          plain, entry):  # fmt: skip
    out = copy_of(plain, tmp_path)
    (out / entry).parent.mkdir(parents=True, exist_ok=True)
    (out / entry).write_text("mine")
    assert foreign_entries(out)
    before = snapshot(out)
    result = CliRunner().invoke(main, ["build", str(source), str(out), *BUILD, "--overwrite"])
    refused(result, "did not write", entry.split("/")[0])
    assert snapshot(out) == before and (out / entry).read_text() == "mine"


def test_overwrite_accepts_the_temporary_files_an_interrupted_write_leaves(tmp_path, source,
                                                                           plain):  # fmt: skip
    out = copy_of(plain, tmp_path)
    hexes = "0123456789abcdef" * 2
    leftovers = [f"ccf/c/1/0/0.{hexes}.partial", f"zarr.{hexes}.partial",
                 f"stats/zarr.{hexes}.partial", f"digests/ccf/c/2.{hexes}.partial"]  # fmt: skip
    for name in leftovers:
        (out / name).write_bytes(b"torn")
    assert foreign_entries(out) == []
    result = CliRunner().invoke(main, ["build", str(source), str(out), *BUILD, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert not list(out.rglob("*.partial")) and verified(out) > 0


# --------------------------------------------------------------------------
# verify_store: a missing stats chunk, missing digests
# --------------------------------------------------------------------------


MISSING_CHUNKS = {
    "stats of a store with noise": ("noisy", "stats/c/0/0", "'stats', chunk c/0/0"),
    "a digests chunk, by its array": ("plain", "digests/ccf/c/1", "'digests/ccf', chunk c/1"),
}


@pytest.mark.parametrize(("store", "chunk", "named"), MISSING_CHUNKS.values(),
                         ids=MISSING_CHUNKS.keys())  # fmt: skip
def test_verify_finds_a_missing_chunk(tmp_path, request, store, chunk, named):
    out = copy_of(request.getfixturevalue(store), tmp_path)
    assert verified(out) > 0
    (out / chunk).unlink()
    with pytest.raises(StoreError, match=rf"array {named} is damaged \(missing\)"):
        verified(out)


def test_verify_finds_stats_that_are_not_the_ones_written(tmp_path, noisy):
    out = copy_of(noisy, tmp_path)
    group = zarr.open_group(str(out), mode="r+")
    stats = group["stats"][:]
    group["stats"][:] = stats[::-1]  # intact chunk (its crc32c right), other values
    with pytest.raises(StoreError, match=r"'stats', chunk c/0/0 .*not the ones written"):
        verified(out)


def test_statistics_of_zeros_are_written_as_a_chunk_file(tmp_path, noisy):
    from ccfkit.store import write_recorded

    out = copy_of(noisy, tmp_path)
    group = zarr.open_group(str(out), mode="r+")
    write_recorded(group, "stats", np.zeros(group["stats"].shape, dtype=np.float32))
    assert (out / "stats" / "c" / "0" / "0").is_file()
    assert verified(out) > 0


@pytest.mark.parametrize("removed", ["digests", "digests/ccf"])
def test_verify_refuses_a_store_whose_recorded_digests_are_removed(tmp_path, plain, removed):
    out = copy_of(plain, tmp_path)
    shutil.rmtree(out / removed)
    swap(out, "ccf/c/0/0/0", "ccf/c/1/0/0")
    with pytest.raises(StoreError, match=r"digests/ccf.* missing"):
        verified(out)


def test_a_store_whose_creation_was_interrupted_is_checked_inside_its_arrays(tmp_path, plain):
    out = copy_of(plain, tmp_path)
    group = zarr.open_group(str(out), mode="r+")
    group.attrs.put({"tool": "ccfkit", "schema_version": 3, "status": "creating"})  # no layout yet
    assert foreign_entries(out) == []  # every array a store may hold is accepted there
    (out / "ccf" / "c" / "my_notes.txt").write_text("mine")
    (out / "analysis").mkdir()
    assert foreign_entries(out) == ["analysis/", "ccf/c/my_notes.txt"]


def _from_before_digests(store: Path, tmp_path: Path) -> zarr.Group:
    """A copy of ``store`` as schema 2 wrote it before digests: no ``digests/``, no ``chunk_digests``."""
    out = copy_of(store, tmp_path)
    shutil.rmtree(out / "digests")
    group = zarr.open_group(str(out), mode="r+")
    attributes = dict(group.attrs)
    del attributes["chunk_digests"]
    group.attrs.put({**attributes, "schema_version": 2})
    return group


def test_statistics_written_into_a_store_from_before_digests_leave_it_one(tmp_path, noisy):
    """A resumed old store's statistics pass must not make it claim digests it lacks."""
    from ccfkit.store import write_recorded

    group = _from_before_digests(noisy, tmp_path)
    assert verified(Path(group.store.root)) > 0
    stats = group["stats"][:]
    write_recorded(group, "stats", stats, noise="mean")
    assert "chunk_digests" not in group.attrs and group.attrs["noise"] == "mean"
    np.testing.assert_array_equal(group["stats"][:], stats)
    assert verified(Path(group.store.root)) > 0


def test_a_store_from_before_frame_checks_verifies(tmp_path, plain):
    """Stores that record digests but were made before ``frame_checks`` existed."""
    out = copy_of(plain, tmp_path)
    for path in ("frame_checks", "input_digest", "digests/frame_checks", "digests/input_digest"):
        shutil.rmtree(out / path, ignore_errors=True)
    assert verified(out) > 0
    shutil.rmtree(out / "digests" / "ccf")  # the arrays it has still need theirs
    with pytest.raises(StoreError, match=r"digests/ccf.* missing"):
        verified(out)
