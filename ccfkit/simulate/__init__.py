"""Simulated single-shot diffraction of droplet-like particles, labelled as in the paper.

One module per concept (the model, its units and limits: ``docs/simulate.md``):

========================  ==================================================================
``config``                :class:`SimulationConfig`, the kinds of particle and their mix
``detector``              the flat detector and the momentum transfer of its pixels
``parameters``            what is drawn for each frame (:func:`draw_parameters`)
``labels``                the paper's label taxonomy and the rules that assign it
``scattering``            form factors and patterns: the NumPy reference of the physics
``instrument``            polarisation, pixel solid angle, stray-light halo, MCP response
``randomization``         randomised detectors: what is drawn per file and per frame
``rendering``             expected counts, Poisson sampling, the frames (:func:`render_frames`)
``kernels``               the GIL-free Numba kernels (loaded only when frames are rendered)
``cxi_file``              the labelled CXI file of ``ccfkit simulate`` (``write_simulated``)
``examples``              the figure of ``ccfkit simulate-examples``
========================  ==================================================================

Every frame is a pure function of ``(seed, index, config)``. Importing this
package loads neither Numba (:mod:`~ccfkit.simulate.kernels`) nor the file
writer (:mod:`~ccfkit.simulate.cxi_file`, h5py): the command line imports the
configuration alone.
"""

from .config import (
    DEFAULT_MIX,
    HC_EV_NM,
    PAPER_MIX,
    TWO_SPHERE_KINDS,
    Kind,
    SimulationConfig,
    parse_mix,
    photon_energy_to_wavelength,
)
from .detector import Detector, momentum_transfer, q_vectors
from .examples import EXAMPLE_PANELS, draw_examples, draw_randomized_examples, example_frames
from .instrument import (
    Polarization,
    cos_two_theta,
    mcp_response,
    polarization_coefficients,
    polarization_factor,
    solid_angle_factor,
    stray_light_halo,
)
from .labels import (
    ASYMMETRY_MIN_PHASE,
    DISPLAY_NAMES,
    DOUBLE_MIN_DRIFT,
    EMPTY_BELOW_PHOTONS,
    EXCLUSIVE_GROUPS,
    LABELS,
    MIN_FRINGE_CONTRAST,
    NEWTON_MIN_FRINGES,
    PARENTS,
    PARTNER_MIN_INTENSITY,
    PROLATE_MIN_ASPECT,
    STREAK_MIN_ASPECT,
    VISIBLE_FRINGE_SHIFT,
    VISIBLE_PHOTONS,
    assign_labels,
    fringe_shift,
    label_rules,
    partner_features,
    projected_semi_axes,
    visible_radius,
)
from .parameters import (
    ASYMMETRIC_COS_TILT,
    DOUBLE_SEPARATION_NM,
    NEWTON_SEPARATION_NM,
    PARTNER_RATIO,
    FrameParameters,
    draw_parameters,
)
from .randomization import FrameRandomization, file_detector, randomized_ranges
from .rendering import POISSON_CUT, expected_counts, poisson_counts, render_frames
from .scattering import fringe_visibility, particle_intensity, sphere_form_factor

__all__ = [
    "ASYMMETRIC_COS_TILT",
    "ASYMMETRY_MIN_PHASE",
    "DEFAULT_MIX",
    "DISPLAY_NAMES",
    "DOUBLE_MIN_DRIFT",
    "DOUBLE_SEPARATION_NM",
    "EMPTY_BELOW_PHOTONS",
    "EXAMPLE_PANELS",
    "EXCLUSIVE_GROUPS",
    "HC_EV_NM",
    "LABELS",
    "MIN_FRINGE_CONTRAST",
    "NEWTON_MIN_FRINGES",
    "NEWTON_SEPARATION_NM",
    "PAPER_MIX",
    "PARENTS",
    "PARTNER_MIN_INTENSITY",
    "PARTNER_RATIO",
    "POISSON_CUT",
    "PROLATE_MIN_ASPECT",
    "STREAK_MIN_ASPECT",
    "TWO_SPHERE_KINDS",
    "VISIBLE_FRINGE_SHIFT",
    "VISIBLE_PHOTONS",
    "Detector",
    "FrameParameters",
    "FrameRandomization",
    "Kind",
    "Polarization",
    "SimulationConfig",
    "assign_labels",
    "cos_two_theta",
    "draw_examples",
    "draw_parameters",
    "draw_randomized_examples",
    "example_frames",
    "expected_counts",
    "file_detector",
    "fringe_shift",
    "fringe_visibility",
    "label_rules",
    "mcp_response",
    "momentum_transfer",
    "parse_mix",
    "particle_intensity",
    "partner_features",
    "photon_energy_to_wavelength",
    "poisson_counts",
    "polarization_coefficients",
    "polarization_factor",
    "projected_semi_axes",
    "q_vectors",
    "randomized_ranges",
    "render_frames",
    "solid_angle_factor",
    "sphere_form_factor",
    "stray_light_halo",
    "visible_radius",
]
