"""The study's classical baseline, timed: shared RBF kernels against one SVC per label and C.

``ccfsort.study_baseline.fit_and_predict`` computes the RBF kernel matrices
once and gives them to every label's SVM and every C (``kernel="precomputed"``);
the straightforward way, a scikit-learn pipeline ``StandardScaler`` ->
``OneVsRestClassifier(SVC(kernel="rbf", gamma="scale"))`` fitted once per C
and class weight, evaluates the kernel again in every label's solver. Both give the same
classifier (the script checks that their test predictions are equal); this
measures the two in the same process, alternately, on random features of the
`cpu` study's size (2,100 / 450 / 450 frames, 576 features, 9 labels)::

    nice -n 10 .venv/bin/python benchmarks/svm_baseline.py --rounds 2

It prints the machine, the load and the median seconds of each. With
``--store STORE --source FILE.cxi`` (a study's store and its frames) it also
times the features of every frame through the Numba and the NumPy backends
(the Numba kernels compiled by a first, untimed call) and their largest
difference.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from harness import load_average, machine


def straightforward(features, labels, split, c_values=(1.0, 10.0)) -> np.ndarray:
    """Test predictions of one RBF SVC pipeline per C and class weight, chosen on validation.

    As the study chooses: per C, each label the class weight (balanced or
    none; a tie keeps balanced) more accurate on validation, then the C of
    the best micro accuracy.
    """
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    truth = labels[split["validation"]]
    best = None
    for c in c_values:
        guesses = {}
        for weight in ("balanced", None):
            svm = SVC(kernel="rbf", C=c, gamma="scale", class_weight=weight)
            model = make_pipeline(StandardScaler(), OneVsRestClassifier(svm))
            model.fit(features[split["train"]], labels[split["train"]].astype(np.int64))
            guesses[weight] = [model.predict(features[split[k]]).astype(bool)
                               for k in ("validation", "test")]  # fmt: skip
        accuracy = {w: (g[0] == truth).mean(axis=0) for w, g in guesses.items()}
        unweighted = accuracy[None] > accuracy["balanced"]
        chosen = [np.where(unweighted, n, b) for n, b in zip(guesses[None], guesses["balanced"])]
        score = float((chosen[0] == truth).mean())
        if best is None or score > best[0]:
            best = (score, chosen[1])
    return best[1]


def time_features(store: str, source: str) -> None:
    """Seconds of the features of every frame of ``store``, Numba against NumPy."""
    from ccfkit.io.source import open_source
    from ccfsort.study_baseline import store_features

    frames = open_source([source])
    store_features(store, frames, backend="numba")  # compiles (or loads) the kernels
    features = {}
    for backend in ("numba", "numpy"):
        started = time.perf_counter()
        features[backend] = store_features(store, frames, backend=backend)
        print(f"features of {frames.n_frames} frames, {backend}: "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    print(f"largest difference: {np.abs(features['numba'] - features['numpy']).max():.1e}")


def main() -> None:
    from ccfsort.study_baseline import fit_and_predict

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--store", default=None, help="a study's store")
    parser.add_argument("--source", default=None, help="the CXI file it was built from")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3000, 576)).astype(np.float32)
    labels = features @ rng.normal(size=(576, 9)) + 5 * rng.normal(size=(3000, 9)) > 8
    split = {"train": np.arange(2100), "validation": np.arange(2100, 2550),
             "test": np.arange(2550, 3000)}  # fmt: skip
    for key, value in machine().items():
        print(f"{key}: {value}")
    times = {"shared kernels": [], "one SVC per label and C": []}
    for _ in range(args.rounds):
        print(f"load average before the round: {load_average()}")
        started = time.perf_counter()
        shared, _info = fit_and_predict(features, labels, split)
        times["shared kernels"].append(time.perf_counter() - started)
        started = time.perf_counter()
        plain = straightforward(features, labels, split)
        times["one SVC per label and C"].append(time.perf_counter() - started)
        assert np.array_equal(shared, plain), "the two classifiers disagree"
    if args.store:
        time_features(args.store, args.source)
    for name, seconds in times.items():
        print(
            f"{name}: median {np.median(seconds):.1f} s ({', '.join(f'{s:.1f}' for s in seconds)})"
        )


if __name__ == "__main__":
    main()
