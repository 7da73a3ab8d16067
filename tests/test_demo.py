"""The README's main job, `ccfkit demo`, on a small simulated set."""

import numpy as np
import zarr
from click.testing import CliRunner

from ccfkit.cli import main


def test_demo_simulates_builds_and_draws(tmp_path):
    result = CliRunner().invoke(main, ["demo", str(tmp_path), "--frames", "24"])
    assert result.exit_code == 0, result.output
    for name in ("demo_maps.png", "ccf_stages.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    clean = zarr.open_group(str(tmp_path / "maps-none.zarr"), mode="r")
    noisy = zarr.open_group(str(tmp_path / "maps-max.zarr"), mode="r")
    assert clean.attrs["status"] == noisy.attrs["status"] == "complete"
    assert clean["ccf"].shape == (24, 224, 224)
    assert noisy.attrs["noise"]["bound"] == noisy.attrs["noise"]["median_max"] > 0
    # same frames, same statistics; the noise changes the maps
    np.testing.assert_array_equal(clean["stats"][:], noisy["stats"][:])
    assert not np.allclose(clean["ccf"][:], noisy["ccf"][:], atol=1e-3)
