"""The study's SVM baseline on a study's stores: balanced weights for every label against the choice.

``ccfsort.study_baseline`` chooses each label's class weight (balanced or
none) on the validation split. This scores, on the test split of a finished
study directory, the SVM of each of its stores twice: with balanced weights
for every label (the rule before the choice) and with the choice, and prints
the test accuracy, precision (micro), the C and the validation accuracies of
each::

    nice -n 10 .venv/bin/python benchmarks/svm_class_weights.py STUDY_DIR

The study's frames are its simulated ones (``STUDY_DIR/data/simulated.cxi``)
unless ``--source`` names them.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    import ccfsort.study_baseline as baseline
    from ccfkit.io.source import open_source
    from ccfkit.store import open_store
    from trainer.data import load_split

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="a finished study directory")
    parser.add_argument("--source", type=Path, default=None, help="its frames (CXI)")
    args = parser.parse_args()
    source = open_source([args.source or args.study / "data" / "simulated.cxi"])
    split = load_split(args.study / "split.npz")
    for store in sorted((args.study / "stores").glob("*.zarr")):
        truth = open_store(str(store))["labels"][:].astype(bool)
        features = baseline.store_features(str(store), source, backend="auto")
        test = truth[split["test"]]
        for rule, weights in (("balanced", ("balanced",)), ("chosen", baseline.CLASS_WEIGHTS)):
            predicted, info = baseline.fit_and_predict(
                features, truth, split, class_weights=weights
            )
            precision = (predicted & test).sum() / max(int(predicted.sum()), 1)
            print(f"{store.name} {rule}: test accuracy {(predicted == test).mean():.3f}, "
                  f"precision {precision:.3f}, C {info['C']}, "
                  f"validation {info['validation_accuracy']}")  # fmt: skip


if __name__ == "__main__":
    main()
