"""``ccfkit.simulate.examples``: the figure of ``ccfkit simulate-examples``."""

from __future__ import annotations

from .helpers import run


def test_simulate_examples_draws_a_png(tmp_path):
    out = tmp_path / "grid.png"
    result = run("simulate-examples", out, "--size", 129)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for title in ("Elliptical", "Prolate", "Streak", "Empty", "Double Rings", "Newton rings",
                  "Asymmetric"):  # fmt: skip
        assert title in result.output
