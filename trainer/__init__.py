"""trainer: the paper's noise-robust pre-activation ResNet-18 on ccfkit stores (docs/training.md).

Modules: :mod:`trainer.model` (the network, Eq. 11), :mod:`trainer.data` (the
chunk-aware store loader), :mod:`trainer.metrics` (§3.2), :mod:`trainer.config`
(the recipe), :mod:`trainer.loop` (the training step and epochs), :mod:`trainer.run_dir`
(files, checkpoints, resume state), :mod:`trainer.report`, :mod:`trainer.inference`
(evaluation, prediction), :mod:`trainer.explain`
(Grad-CAM++), :mod:`trainer.cli` (the ``trainer`` command). See
docs/training.md.
"""

from importlib.metadata import version

__version__ = version("ccfkit")  # trainer ships in the ccfkit distribution: one version

__all__ = ["__version__"]
