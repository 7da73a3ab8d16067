"""Workflows that sort a run of frames: above the engine (:mod:`ccfkit`) and the trainer.

The engine computes maps and writes stores; the trainer fits and applies the
network to stores. What combines both lives here: the studies (``trainer study``),
sorting frames straight from files, labelling frames by hand and the gallery of
a sorted run. Nothing in :mod:`ccfkit` or in the trainer proper imports this
package; the command line (``trainer``) imports it on use (docs/architecture.md).

Modules: :mod:`ccfsort.study` (``trainer study``: data, split, stores, runs,
results), :mod:`ccfsort.study_plan` (a study file or preset -> arms, tables,
claims), :mod:`ccfsort.study_report` (report.md, report.json, the tables'
figures), :mod:`ccfsort.verdicts` (paired comparisons of arms),
:mod:`ccfsort.sorting` (``trainer predict`` on frames: maps made on the way);
``presets/`` holds the shipped study files (docs/study.md).
"""
