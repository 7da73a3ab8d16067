"""One source for each setting: the enums, the dataclasses' defaults, and every entry point.

The entry points: the library (``make_polar_plan``, ``compute_maps``), the
build's recipe (``BuildConfig``), the command lines (``ccfkit build``,
``ccfkit simulate``, ``trainer fit``, made from the dataclass fields by
``ccfkit.cli_options``), the study presets and the plot's paper recipe.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import subprocess
import sys
import typing

import click
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import HAS_TORCH

from ccfkit import cli, noise
from ccfkit.build_config import (
    BUILD_GRID,
    BUILD_MAPS,
    PAPER_RECIPE,
    RECIPES,
    BuildConfig,
    BuildOptions,
    NoiseSettings,
    OutputSettings,
)
from ccfkit.ccf import Estimator, MapSettings, Precision, Scale
from ccfkit.cli_options import apply_options, choice_values, field_options
from ccfkit.io.source import InputError
from ccfkit.polar import RingGrid
from ccfkit.settings import Compressor, MapDtype, NoiseLevel, WriteMethod, values
from ccfkit.simulate import SimulationConfig
from ccfkit.store import COMPRESSORS

#: The trainer imports torch (the ``trainer`` extra): not installed on the newest Python.
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")

#: The parts of a store's recipe, as BuildConfig composes them.
PARTS = {"grid": RingGrid, "maps": MapSettings, "noise": NoiseSettings, "output": OutputSettings}


#: Scale with one more mode, as a newcomer would add it.
ScaleWithNew = enum.Enum("ScaleWithNew", [(m.name, m.value) for m in Scale] + [("NEW", "new")],
                         type=str)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SettingsWithNew:
    """A field annotated with the enum, and a ``str`` field with the enum as its choices."""

    scale: ScaleWithNew = ScaleWithNew.NONE
    named: str = dataclasses.field(default="none", metadata={"choices": ScaleWithNew})


@dataclasses.dataclass(frozen=True)
class Example:
    """One field of each annotation the generator reads."""

    orders: tuple[int, ...] = (8,)
    span: tuple[float, float] = (1.0, 2.0)
    radius: float | str = dataclasses.field(default="auto", metadata={"words": ("auto",)})
    limit: float | None = None
    flag: bool = True
    size: int = dataclasses.field(default=4, metadata={"range": {"min": 1}, "option": "--n"})


def _option(command: click.Command, name: str) -> click.Option:
    return next(p for p in command.params if p.name == name)


def _field_default(item: dataclasses.Field):
    value = item.default if item.default_factory is dataclasses.MISSING else item.default_factory()
    return value.value if isinstance(value, enum.Enum) else value


def _option_default(option: click.Option):
    """An option's default as the command receives it (``8`` of ``--orders`` is ``(8,)``)."""
    if option.default is None:
        return None
    return option.type_cast_value(click.Context(click.Command("x")), option.default)


# --------------------------------------------------------------------------
# The enums
# --------------------------------------------------------------------------


def test_the_store_offers_exactly_the_compressors_of_the_enum():
    assert list(COMPRESSORS) == values(Compressor)


def test_noise_keeps_the_enum_of_the_light_module():
    assert noise.NoiseLevel is NoiseLevel
    assert values(NoiseLevel) == ["none", "mean", "mean+std", "max", "max-frame"]


@pytest.mark.parametrize(
    ("option", "kind"),
    [
        ("noise", NoiseLevel),
        ("estimator", Estimator),
        ("scale", Scale),
        ("precision", Precision),
        ("map_dtype", MapDtype),
        ("compressor", Compressor),
        ("write_method", WriteMethod),
    ],
)
def test_build_choices_are_the_enums(option, kind):
    assert list(_option(cli.build, option).type.choices) == values(kind)


def test_a_new_enum_member_is_a_choice_of_the_generated_option_at_once():
    """A new scale mode needs no edit of the command line: its choices come from the enum."""
    assert values(ScaleWithNew)[: len(Scale)] == values(Scale)

    @click.command()
    @apply_options(field_options(SettingsWithNew))
    def command(**settings):
        click.echo(json.dumps(settings))

    for name in ("scale", "named"):
        assert list(_option(command, name).type.choices) == [*values(Scale), "new"]
    result = CliRunner().invoke(command, ["--scale", "new", "--named", "new"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"scale": "new", "named": "new"}
    assert CliRunner().invoke(command, ["--scale", "median"]).exit_code == 2


# --------------------------------------------------------------------------
# One default per setting
# --------------------------------------------------------------------------


def test_the_library_takes_its_grid_and_maps_from_the_dataclasses():
    """make_polar_plan and compute_maps restate no default: they build a RingGrid/MapSettings."""
    from ccfkit.engine import compute_maps
    from ccfkit.polar import make_polar_plan

    for function in (make_polar_plan, compute_maps):
        restated = set(inspect.signature(function).parameters) & (
            {f.name for f in dataclasses.fields(RingGrid)}
            | {f.name for f in dataclasses.fields(MapSettings)}
        )
        assert not restated, f"{function.__name__} restates {restated}"
    rng = np.random.default_rng(0)
    images = rng.random((2, 33, 33))
    grid = RingGrid(q_bins=8, phi_bins=16)
    by_object = compute_maps(images, grid=grid, settings=MapSettings(orders=(2,)), backend="numpy")
    by_keyword = compute_maps(images, q_bins=8, phi_bins=16, order=2, backend="numpy")
    np.testing.assert_array_equal(by_object, by_keyword)
    plan = make_polar_plan((33, 33), q_bins=8)
    assert (plan.phi_bins, plan.r_min, plan.min_ring_fraction) == (
        RingGrid.phi_bins,
        RingGrid.r_min,
        RingGrid.min_ring_fraction,
    )


def test_the_builds_defaults_are_order_2_on_the_papers_rings():
    """The build's map (docs/ccf.md, "Defaults"), value by value; the library's stays the paper's."""
    config = BuildConfig()
    assert config.grid == BUILD_GRID and config.maps == BUILD_MAPS
    grid = {f.name: getattr(config.grid, f.name) for f in dataclasses.fields(RingGrid)}
    assert grid == {"q_bins": 224, "phi_bins": 512, "r_min": 0.0, "r_max": None,
                    "min_ring_fraction": 0.0, "q_range": None}  # fmt: skip
    maps = {f.name: getattr(config.maps, f.name) for f in dataclasses.fields(MapSettings)}
    assert maps == {"orders": (2,), "delta": 0.0, "estimator": Estimator.RING,
                    "scale": Scale.MAXABS, "precision": Precision.FLOAT32}  # fmt: skip
    # the library's defaults are unchanged: every ring from 0.5 valid, the paper's order 8
    differs = {
        f.name for f in dataclasses.fields(RingGrid) if getattr(BUILD_GRID, f.name) != getattr(RingGrid(), f.name)
    }  # fmt: skip
    assert differs == {"min_ring_fraction"} and RingGrid().min_ring_fraction == 0.5
    assert MapSettings().orders == (8,)
    # the build's map is the paper's but for the order
    assert dataclasses.replace(config, maps=dataclasses.replace(config.maps, orders=(8,))) == (
        PAPER_RECIPE
    )
    assert config.noise == NoiseSettings() and config.output == OutputSettings()
    assert RECIPES["build"] == config


def test_the_recipe_is_composed_without_repeating_a_field():
    keys = BuildConfig.parameter_keys()
    assert len(keys) == len(set(keys))
    assert [f.name for f in dataclasses.fields(BuildConfig)] == list(PARTS)
    for name, kind in PARTS.items():
        assert isinstance(getattr(BuildConfig(), name), kind)
    assert len(keys) == sum(len(dataclasses.fields(kind)) for kind in PARTS.values())


def test_the_store_parameters_read_back_into_the_same_recipe():
    config = BuildConfig.from_parameters(
        {"q_bins": 16, "orders": [8, 2], "scale": "ring", "noise": "max", "seed": 3,
         "image_size": 32, "r_min": 1.5}
    )  # fmt: skip
    stored = json.loads(json.dumps(config.parameters()))  # as a store's attributes hold it
    assert BuildConfig.from_parameters(stored) == config
    assert stored["orders"] == [8, 2] and stored["noise"] == "max" and stored["scale"] == "ring"
    assert config.grid.q_bins == 16 and config.maps.scale is Scale.RING
    with pytest.raises(InputError, match="unknown build parameter"):
        BuildConfig.from_parameters({"q_bin": 16})
    with pytest.raises(InputError, match="unknown recipe"):
        BuildConfig.from_parameters({"recipe": "papers"})


@pytest.mark.parametrize(
    ("parameters", "match"),
    [
        ({"map_dtype": "float64"}, "float32 or float16"),
        ({"map_dtype": "float16", "scale": "none"}, "float16 maps need a --scale"),
        ({"orders": [300]}, "orders must lie in"),
        ({"min_ring_fraction": 2.0}, r"lie in \[0, 1\]"),
        ({"r_min": "inner"}, "'auto'"),
        ({"noise": "loud"}, "not a valid NoiseLevel"),
    ],
)
def test_a_recipe_the_engine_cannot_use_is_one_input_error(parameters, match):
    with pytest.raises(InputError, match=match):
        BuildConfig.from_parameters(parameters)


def test_build_options_default_to_the_recipe_and_the_build_options():
    """Every field of every part of the recipe, and of BuildOptions, is an option of build."""
    recipe = BuildConfig().parameters()
    for key, value in recipe.items():
        option = _option(cli.build, key)
        expected = 224 if key == "image_size" else value  # stored frames: --keep-images' size
        assert _option_default(option) == expected, key
        assert option.help, key
    for item in dataclasses.fields(BuildOptions):
        option = _option(cli.build, item.name)
        assert _option_default(option) == item.default, item.name
        assert option.help, item.name
    from ccfkit.pipeline import build

    assert inspect.signature(build).parameters["chunk_frames"].default == BuildOptions.chunk_frames
    names = {opt for p in cli.build.params for opt in p.opts}
    assert {"--noise", "--dtype", "--chunk", "--chunk-writer", "--orders", "--order"} <= names


def test_the_build_command_line_makes_the_recipe_of_its_options(tmp_path, monkeypatch):
    """The options reach the pipeline as one BuildConfig and the BuildOptions' keywords."""
    from conftest import write_cxi

    from ccfkit import pipeline

    seen = {}

    def record(source, out, config, **options):
        seen.update(config=config, options=options)

    monkeypatch.setattr(pipeline, "build", record)
    cxi = write_cxi(tmp_path / "frames.cxi", np.ones((2, 33, 33), np.float32))

    def build(*args):
        return CliRunner().invoke(cli.main, ["build", str(cxi), str(tmp_path / "o.zarr"), *args])

    assert build("--q-bins", "16", "--phi-bins", "32", "--order", "2", "--noise", "max",
                 "--r-min", "1.5", "--chunk", "8", "--keep-images").exit_code == 0  # fmt: skip
    expected = BuildConfig.from_parameters(
        {"q_bins": 16, "phi_bins": 32, "orders": (2,), "noise": "max", "r_min": 1.5,
         "image_size": 224}
    )  # fmt: skip
    assert seen["config"] == expected
    assert seen["options"]["chunk_frames"] == 8 and seen["options"]["backend"] == "auto"
    assert build().exit_code == 0
    assert seen["config"] == BuildConfig()  # no --keep-images: no stored frames
    both = build("--orders", "8,2", "--order", "2")
    assert both.exit_code == 2 and "give --orders or --order" in both.output
    assert build("--r-min", "inner").exit_code == 2


def test_paper_gives_the_paper_recipe_and_refuses_a_map_option_that_contradicts_it(
    tmp_path, monkeypatch
):
    from conftest import write_cxi

    from ccfkit import pipeline

    seen = {}
    monkeypatch.setattr(pipeline, "build", lambda source, out, config, **_: seen.update(c=config))
    cxi = write_cxi(tmp_path / "frames.cxi", np.ones((2, 33, 33), np.float32))

    def build(*args):
        return CliRunner().invoke(cli.main, ["build", str(cxi), str(tmp_path / "o.zarr"), *args])

    for args in (["--paper"], ["--order", "8"], ["--orders", "8"],
                 # the paper's own values, given again, do not contradict it
                 ["--paper", "--order", "8", "--r-min", "0", "--min-ring-fraction", "0",
                  "--estimator", "ring", "--scale", "maxabs", "--q-bins", "224"]):  # fmt: skip
        seen.clear()
        assert build(*args).exit_code == 0, args
        assert seen["c"] == PAPER_RECIPE, args
    # what is not the map (noise, stored frames, dtype) goes with --paper
    assert build("--paper", "--noise", "max", "--seed", "3", "--keep-images").exit_code == 0
    expected = dataclasses.replace(
        PAPER_RECIPE, noise=NoiseSettings("max", 3), output=OutputSettings(image_size=224)
    )
    assert seen["c"] == expected
    refused = {
        ("--order", "2"): "--order 2",
        ("--orders", "2,8"): "--orders 2,8",
        ("--q-bins", "64"): "--q-bins 64",
        ("--r-min", "auto", "--estimator", "mask-corrected"): "--r-min auto, --estimator mask-corrected",
        ("--min-ring-fraction", "0.5"): "--min-ring-fraction 0.5",
        ("--scale", "ring"): "--scale ring",
        ("--q-range", "0.02", "0.12"): "--q-range 0.02 0.12",
        ("--precision", "bf16"): "--precision bf16",
    }  # fmt: skip
    for args, named in refused.items():
        seen.clear()
        result = build("--paper", *args)
        assert result.exit_code == 2 and not seen, args
        error = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(error) == 1 and f"PAPER_RECIPE); {named} ask" in error[0], error


def test_simulate_options_default_to_the_simulation_config():
    simulated = SimulationConfig()
    for item in dataclasses.fields(SimulationConfig):
        option = _option(cli.simulate, item.name)
        assert option.help, item.name
        if item.name == "mix":  # written as text, parsed by the config
            assert SimulationConfig(mix=option.default).mix == simulated.mix
        else:
            assert _option_default(option) == getattr(simulated, item.name), item.name
    assert {"--energy", "--hole"} <= {opt for p in cli.simulate.params for opt in p.opts}


@needs_torch
def test_fit_options_are_the_model_and_train_fields():
    from trainer import cli as trainer_cli
    from trainer.config import TrainConfig
    from trainer.data import InputKind
    from trainer.model import ModelConfig

    for kind in (ModelConfig, TrainConfig):
        for item in dataclasses.fields(kind):
            no_option = item.name in trainer_cli.MODEL_FROM_STORE_OR_PAPER and kind is ModelConfig
            if no_option or item.metadata.get("cli") is False:
                options = [p for p in trainer_cli.fit.params if isinstance(p, click.Option)]
                assert all(p.name != item.name for p in options)
                continue
            option = _option(trainer_cli.fit, item.name)
            expected = None if item.metadata.get("resume") else _field_default(item)
            assert _option_default(option) == expected, item.name
    assert list(_option(trainer_cli.fit, "input").type.choices) == values(InputKind)
    assert {"--split", "--no-log-act", "--epochs"} <= {
        opt for p in trainer_cli.fit.params for opt in (*p.opts, *p.secondary_opts)
    }


# --------------------------------------------------------------------------
# The paper's map: one recipe for the plot, the presets and the docs
# --------------------------------------------------------------------------


def test_the_paper_recipe_is_the_papers_map():
    assert RECIPES["paper"] is PAPER_RECIPE
    assert PAPER_RECIPE.maps == MapSettings(orders=(8,), estimator="ring", scale="maxabs")
    assert PAPER_RECIPE.grid.r_min == 0.0 and PAPER_RECIPE.grid.min_ring_fraction == 0.0
    assert (PAPER_RECIPE.grid.q_bins, PAPER_RECIPE.grid.phi_bins) == (224, 512)


@pytest.mark.parametrize("name", ["cpu", "cpu-maps", "cpu-gaps", "paper"])
def test_the_presets_start_from_the_named_paper_recipe(name):
    from ccfsort.study_plan import build_config, load_config

    build = load_config(name)["build"]
    assert build.get("recipe") == "paper"
    config = build_config(build)
    assert config.maps == PAPER_RECIPE.maps
    assert config.grid.r_min == PAPER_RECIPE.grid.r_min
    assert config.grid.min_ring_fraction == PAPER_RECIPE.grid.min_ring_fraction
    restated = {f.name for f in dataclasses.fields(MapSettings)} | {"r_min", "min_ring_fraction"}
    assert not restated & set(build), "a preset restates the paper's map"


@pytest.mark.parametrize(
    "name",
    ["smoke", "cpu", "cpu-maps", "cpu-gaps", "paper", "transfer", "transfer-inputs", "detector"],
)
def test_every_preset_names_its_map_so_the_builds_defaults_do_not_change_it(name):
    """A preset starts from a named recipe other than the build's, or names the map in full."""
    from ccfsort.study_plan import load_config

    build = load_config(name)["build"]
    named = build.get("recipe") not in (None, "build")
    assert named or {"orders", "r_min", "min_ring_fraction", "estimator", "scale"} <= set(build)


def test_the_smoke_preset_keeps_its_map():
    """The map the smoke study was written with: order 8 on the usable rings from r_min auto."""
    from ccfsort.study_plan import build_config, load_config

    config = build_config(load_config("smoke")["build"])
    assert config.maps == MapSettings(orders=(8,), estimator="ring", scale="maxabs")
    assert (config.grid.r_min, config.grid.min_ring_fraction) == ("auto", 0.5)


def test_the_plot_draws_the_paper_recipe(monkeypatch):
    from ccfkit import engine, plotting

    asked = []
    original = engine.compute_maps

    def spy(images, **kw):
        asked.append(kw)
        return original(images, **kw)

    monkeypatch.setattr(engine, "compute_maps", spy)
    image = np.random.default_rng(1).random((33, 33)) + 1.0
    mask = np.ones(image.shape, bool)
    mask[15:18, 15:18] = False
    plotting.estimators_figure(image, mask, (16.0, 16.0), q_bins=8, phi_bins=16, backend="numpy")
    paper = asked[0]
    assert paper["settings"] == PAPER_RECIPE.maps
    assert paper["grid"] == dataclasses.replace(PAPER_RECIPE.grid, q_bins=8, phi_bins=16)
    assert asked[1]["grid"] == RingGrid(q_bins=8, phi_bins=16, r_min="auto")  # usable rings


def test_the_trainer_version_is_the_packages():
    import trainer
    from ccfkit import __version__

    assert trainer.__version__ == __version__


@needs_torch
def test_the_study_split_defaults_are_the_train_configs():
    from ccfsort.study_plan import load_config
    from trainer.config import STUDY_TEST_FRACTION, TrainConfig

    split = load_config("cpu")["split"]
    assert "validation" not in split and "test" not in split  # the defaults, not restated
    assert TrainConfig.eval_fraction == 0.15 and STUDY_TEST_FRACTION == 0.15


# --------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------


def test_the_generator_reads_the_annotations():
    @click.command()
    @apply_options(field_options(Example))
    def command(**settings):
        click.echo(json.dumps(settings))

    def run(*args):
        return CliRunner().invoke(command, list(args))

    assert json.loads(run().output) == {"orders": [8], "span": [1.0, 2.0], "radius": "auto",
                                        "limit": None, "flag": True, "size": 4}  # fmt: skip
    given = run("--orders", "8,2", "--span", "3", "4", "--radius", "2.5", "--limit", "7",
                "--no-flag", "--n", "9")  # fmt: skip
    assert json.loads(given.output) == {"orders": [8, 2], "span": [3.0, 4.0], "radius": 2.5,
                                        "limit": 7.0, "flag": False, "size": 9}  # fmt: skip
    for bad in (["--orders", "8,x"], ["--radius", "inner"], ["--n", "0"]):
        result = run(*bad)
        assert result.exit_code == 2 and bad[0] in result.output, result.output
    assert choice_values(Scale) == values(Scale)


@dataclasses.dataclass(frozen=True)
class Described:
    """A dataclass whose docstring describes its fields.

    Attributes
    ----------
    low, high : float
        A bound, in ``px`` (see :class:`~ccfkit.polar.RingGrid`).
    named : int
        Not this text.
    """

    low: float = 0.0
    high: float = 1.0
    named: int = dataclasses.field(default=2, metadata={"help": "The metadata's text."})


def test_help_is_the_metadata_else_the_docstring():
    @click.command()
    @apply_options(field_options(Described))
    def command(**settings):
        pass

    for name in ("low", "high"):
        assert _option(command, name).help == "A bound, in px (see RingGrid)."
    assert _option(command, "named").help == "The metadata's text."


@dataclasses.dataclass(frozen=True)
class WithFile:
    table: str | None = dataclasses.field(default=None, metadata={"path": "file"})


def test_a_file_field_is_an_existing_file_given_as_its_absolute_path(tmp_path, monkeypatch):
    @click.command()
    @apply_options(field_options(WithFile))
    def command(**settings):
        click.echo(settings["table"])

    (tmp_path / "t.csv").write_text("x")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(command, ["--table", "t.csv"])
    assert result.output.strip() == str(tmp_path / "t.csv")
    assert CliRunner().invoke(command, ["--table", "missing.csv"]).exit_code == 2
    assert CliRunner().invoke(command, ["--table", "."]).exit_code == 2


def test_the_command_line_modules_load_no_engine_store_dask_or_numba():
    code = (
        f"import sys, ccfkit.cli{', trainer.cli' if HAS_TORCH else ''}; "
        "print(sorted(m for m in ('ccfkit.pipeline', 'ccfkit.engine', 'zarr', "
        "'dask', 'numba') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
    light = (
        "import sys, ccfkit.cli; print('ccfkit.store' in sys.modules or 'torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", light], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False", result.stderr


@needs_torch
def test_annotations_resolve():
    """Every dataclass the command lines are made from has annotations the generator can read."""
    from trainer.config import TrainConfig
    from trainer.model import ModelConfig

    for kind in (*PARTS.values(), BuildOptions, SimulationConfig, TrainConfig, ModelConfig):
        assert typing.get_type_hints(kind)
