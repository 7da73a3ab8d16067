"""trainer: the paper's noise-robust pre-activation ResNet-18 on ccfkit stores (docs/training.md).

Modules: :mod:`trainer.model` (the network, Eq. 11), :mod:`trainer.data` (the
chunk-aware store loader), :mod:`trainer.metrics` (§3.2), :mod:`trainer.config`
(the recipe), :mod:`trainer.loop` (the training step and epochs), :mod:`trainer.run_dir`
(files, checkpoints, resume state), :mod:`trainer.report`, :mod:`trainer.inference`
(evaluation, prediction), :mod:`trainer.explain`
(Grad-CAM++), :mod:`trainer.cli` (the ``trainer`` command). See
docs/training.md.
"""

from ccfkit._version import __version__  # one distribution, one version (the package metadata)

__all__ = ["__version__"]
