"""One source for each setting: the enums, the dataclasses' defaults and the command line."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from ccfkit import cli, noise
from ccfkit.build_config import BuildConfig
from ccfkit.ccf import Estimator, Scale
from ccfkit.io.source import InputError
from ccfkit.settings import Compressor, MapDtype, NoiseLevel, values
from ccfkit.simulate import SimulationConfig
from ccfkit.store import COMPRESSORS


def _option(command: click.Command, name: str) -> click.Option:
    return next(p for p in command.params if p.name == name)


def test_the_store_offers_exactly_the_compressors_of_the_enum():
    assert list(COMPRESSORS) == values(Compressor)


def test_noise_keeps_the_enum_of_the_light_module():
    assert noise.NoiseLevel is NoiseLevel
    assert values(NoiseLevel) == ["none", "mean", "mean+std", "max"]


@pytest.mark.parametrize(
    ("option", "kind", "default"),
    [
        ("noise", NoiseLevel, BuildConfig.noise),
        ("estimator", Estimator, BuildConfig.estimator),
        ("scale", Scale, BuildConfig.scale),
        ("map_dtype", MapDtype, BuildConfig.map_dtype),
        ("compressor", Compressor, "none"),
    ],
)
def test_build_choices_are_the_enums_and_defaults_the_config(option, kind, default):
    param = _option(cli.build, option)
    assert list(param.type.choices) == values(kind)
    assert param.default == default


def test_build_and_simulate_numbers_default_to_the_dataclasses():
    for option, field in (("q_bins", "q_bins"), ("phi_bins", "phi_bins"), ("delta", "delta"),
                          ("min_ring_fraction", "min_ring_fraction"), ("seed", "seed")):  # fmt: skip
        assert _option(cli.build, option).default == getattr(BuildConfig(), field)
    simulated = SimulationConfig()
    for option, field in (("size", "size"), ("energy", "photon_energy"), ("hole", "hole_radius"),
                          ("polarization", "polarization"), ("mcp", "mcp")):  # fmt: skip
        assert _option(cli.simulate, option).default == getattr(simulated, field)
    # the --mix default, parsed, is the config's default mixture
    assert SimulationConfig(mix=_option(cli.simulate, "mix").default).mix == simulated.mix


def test_a_map_dtype_outside_the_enum_is_refused():
    with pytest.raises(InputError, match="float32 or float16"):
        BuildConfig(map_dtype="float64")


def test_the_command_line_module_loads_no_engine_store_dask_or_numba():
    code = (
        "import sys, ccfkit.cli; "
        "print(sorted(m for m in ('ccfkit.pipeline', 'ccfkit.store', 'ccfkit.engine', 'zarr', "
        "'dask', 'torch', 'numba') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
