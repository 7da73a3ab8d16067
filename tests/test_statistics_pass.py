"""The statistics pass started beside a build's set-up (ccfkit.statistics_pass)."""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from conftest import write_cxi

from ccfkit import pipeline
from ccfkit.cli import main
from ccfkit.io.source import open_source
from ccfkit.statistics_pass import StatisticsAhead, chunk_slices, chunk_statistics

CENTER = (15.5, 14.0)
FRAMES, SIZE = 21, 32
ARGS = ["--center", f"{CENTER[0]},{CENTER[1]}", "--q-bins", "8", "--phi-bins", "16",
        "--chunk", "4", "--quiet", "--noise", "max"]  # fmt: skip


@pytest.fixture(scope="module")
def cxi(tmp_path_factory):
    rng = np.random.default_rng(11)
    frames = rng.gamma(2.0, 5.0, size=(FRAMES, SIZE, SIZE)).astype(np.float32)
    frames[3, 2, 2] = np.nan
    bitmask = np.zeros((SIZE, SIZE), dtype=np.uint16)
    bitmask[:, 7] = 8  # a dead column (CXI bit mask: bad)
    return write_cxi(tmp_path_factory.mktemp("in") / "run.cxi", frames, bitmask=bitmask)


def test_the_pass_ahead_gives_each_chunks_own_statistics(cxi):
    source = open_source([cxi])
    mask = np.asarray(source.mask, dtype=bool)
    ahead = StatisticsAhead.start(chunk_statistics, source.reader, mask, 4, workers=2)
    results = ahead.results(progress=False)
    parts = chunk_slices(FRAMES, 4)
    assert parts[-1] == slice(20, 21) and len(results) == len(parts) == 6
    for part, (stats, digest) in zip(parts, results):
        expected, expected_digest = chunk_statistics(part, source.reader, mask)
        np.testing.assert_array_equal(stats, expected)
        assert digest == expected_digest
    assert ahead.matches(parts, mask)
    assert not ahead.matches(chunk_slices(FRAMES, 8), mask)  # other chunks
    assert not ahead.matches(parts, ~mask) and not ahead.matches(parts, None)


def test_stopping_drops_the_tasks_not_begun(cxi):
    source = open_source([cxi])
    release, calls = threading.Event(), []

    def slow(frames, reader, mask, clock):
        calls.append(frames)
        release.wait(timeout=10)
        return chunk_statistics(frames, reader, mask, clock)

    ahead = StatisticsAhead.start(slow, source.reader, None, 4, workers=1)
    stopper = threading.Thread(target=ahead.stop)
    stopper.start()  # while the first chunk runs
    waiting = ahead._futures[1:]
    for _ in range(1000):  # until the stop has dropped the others
        if all(future.cancelled() for future in waiting):
            break
        threading.Event().wait(0.01)
    release.set()
    stopper.join(timeout=10)
    assert not stopper.is_alive()
    assert calls == [slice(0, 4)]  # the chunks not begun when it stopped never ran


def test_an_error_in_a_task_is_raised_where_the_results_are_taken(cxi):
    source = open_source([cxi])

    def failing(frames, reader, mask, clock):
        if frames.start == 8:
            raise OSError("unreadable chunk (simulated)")
        return chunk_statistics(frames, reader, mask, clock)

    ahead = StatisticsAhead.start(failing, source.reader, None, 4, workers=2)
    with pytest.raises(OSError, match="simulated"):
        ahead.results(progress=False)


def test_a_build_is_the_same_with_the_pass_ahead_or_after_the_set_up(tmp_path, cxi,
                                                                      monkeypatch):  # fmt: skip
    def run(out):
        result = CliRunner().invoke(main, ["build", str(cxi), str(out), *ARGS],
                                    catch_exceptions=False)  # fmt: skip
        assert result.exit_code == 0, result.output
        return zarr.open_group(str(out), mode="r")

    ahead = run(tmp_path / "ahead.zarr")
    started = []
    real = pipeline.StatisticsAhead.start
    monkeypatch.setattr(pipeline.StatisticsAhead, "start",
                        lambda *a, **k: started.append(1) or real(*a, **k))  # fmt: skip
    run(tmp_path / "spied.zarr")
    assert started == [1]  # a new local build with noise starts the pass ahead
    monkeypatch.setattr(pipeline, "_statistics_ahead", lambda *a: contextlib.nullcontext())
    after = run(tmp_path / "after.zarr")
    for name in ("stats", "input_digest", "ccf", "frame_checks"):
        np.testing.assert_array_equal(ahead[name][:], after[name][:], err_msg=name)
    assert ahead.attrs["noise"] == after.attrs["noise"]


def test_a_set_up_that_fails_stops_the_pass_and_writes_nothing(tmp_path, cxi):
    out = tmp_path / "out.zarr"
    args = ["build", str(cxi), str(out), *ARGS, "--r-max", "90"]  # beyond the detector
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and "--r-max" in result.output
    assert not out.exists()
    running = [t.name for t in threading.enumerate() if t.name.startswith("ccfkit-statistics")]
    assert running == []
