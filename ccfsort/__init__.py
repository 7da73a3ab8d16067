"""Workflows that sort a run of frames: above the engine (:mod:`ccfkit`) and the trainer.

The engine computes maps and writes stores; the trainer fits and applies the
network to stores. What combines both lives here: the studies (``trainer study``),
sorting frames straight from files, labelling frames by hand and the gallery of
a sorted run. Nothing in :mod:`ccfkit` or in the trainer proper imports this
package; the command line (``trainer``) imports it on use.
"""
