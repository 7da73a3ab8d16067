"""A classical baseline beside every study table: an RBF SVM on ring features (docs/study.md).

The paper compares its network with a classical method (§5); a study does
the same in every table, on the same frames, split and metrics as the
network.

**Features.** The frames an arm's store was built from, with the store's
own noise (:func:`ccfkit.noise.add_noise`, the store's seed and bound), are
resampled with the plans its maps were made with (:func:`store_plans`: the
same centre, mask and rings; a module stack's pixel positions; rings in q
placed at each frame's own wavelength and distance as the build placed
them) and decomposed into angular harmonics
(:func:`ccfkit.angular_fourier`, Eq. 15). A frame's features are the
moduli ``|F_n(q_k)|`` for ``n = 0 .. 8`` on every used ring ``q_k``:
``|F_0|`` is the radial profile (the ring's mean intensity), ``|F_n|`` the
strength of the n-fold angular modulation on that ring, both invariant to a
rotation of the frame. Each frame is divided by its mean radial profile (a
per-frame scale, as the maps' ``maxabs`` and the images' normalisation) and
taken through ``log1p`` (intensities span decades).

**Classifier.** scikit-learn: features standardised on the training
split, one RBF support-vector classifier per label (one-vs-rest, for the
multi-label targets), ``gamma = "scale"``, each label's class weight
(balanced or none, :data:`CLASS_WEIGHTS`) the more accurate on the
validation split, and ``C`` chosen from :data:`C_VALUES` by micro accuracy
there with those weights (the network's checkpoint is chosen on it too).
The RBF kernel matrices are computed once and shared by every label, ``C``
and weight (docs/study.md has the time this saves). Trained on the whole
training split, scored on the test split. The features of a store are computed once
per (frames, noise, rings and their placement, :func:`cache_record`) and the
result is cached in ``baselines/svm-KEY.npz`` of the study directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

__all__ = [
    "CLASS_WEIGHTS",
    "C_VALUES",
    "ORDERS",
    "cache_record",
    "choose_class_weights",
    "eval_cache_record",
    "feature_vectors",
    "fit_and_predict",
    "fit_and_predict_many",
    "last_batches",
    "ring_harmonics",
    "store_features",
    "store_frames",
    "store_plans",
    "svm_baseline",
    "svm_baselines",
    "svm_on_source",
]

log = logging.getLogger("ccfsort.study.baseline")  # a part of the study's log

#: Angular orders of the features (0: the radial profile).
ORDERS = tuple(range(9))
#: The SVM's regularisation strengths tried; the one best on validation is kept.
C_VALUES = (1.0, 10.0)
#: The class weights tried for every label (scikit-learn's ``class_weight``); per label the
#: one most accurate on validation is kept, a tie keeps the first.
CLASS_WEIGHTS = ("balanced", None)
#: The store parameters the features depend on (the rings and the noise), which key the cache
#: (with ``q_range``, :func:`cache_record`).
FRAME_PARAMETERS = ("q_bins", "phi_bins", "r_min", "r_max", "min_ring_fraction", "noise", "seed")
#: Frames resampled per batch.
BATCH_FRAMES = 128


def ring_harmonics(frames, plan, orders=ORDERS, *, backend="numpy") -> np.ndarray:
    """``|F_n(q_k)|`` of frames on a polar grid (Eq. 15).

    Parameters
    ----------
    frames : (B, H, W) float array
        Detector frames.
    plan : ccfkit.PolarPlan
        The polar grid (:func:`ccfkit.make_polar_plan`).
    orders : sequence of int
        Angular orders ``n``.
    backend : str
        Engine backend of :func:`ccfkit.resample` and :func:`ccfkit.angular_fourier`.

    Returns
    -------
    (B, Q, N) float64 array
        The moduli; 0 on rings without a valid sample.
    """
    from ccfkit import angular_fourier, resample

    polar = resample(frames, plan, backend=backend)
    coefficients = angular_fourier(polar.values, polar.valid, orders, backend=backend)
    coefficients = coefficients.get() if hasattr(coefficients, "get") else coefficients
    return np.abs(np.asarray(coefficients)).astype(np.float64)


def feature_vectors(harmonics, ring_used) -> np.ndarray:
    """The SVM's inputs: used rings only, per-frame scale, ``log1p``, flattened.

    Parameters
    ----------
    harmonics : (B, Q, N) float array
        :func:`ring_harmonics`; ``[..., 0]`` is the radial profile.
    ring_used : (Q,) bool array
        The rings the maps use.

    Returns
    -------
    (B, U * N) float32 array
        ``log1p(|F_n(q_k)| / s)`` for the U used rings, ``s`` the frame's mean
        radial profile over them (1 where that is not positive).
    """
    used = np.asarray(harmonics)[:, np.asarray(ring_used, dtype=bool)]
    scale = used[:, :, 0].mean(axis=1)
    scale = np.where(scale > 0, scale, 1.0)[:, None, None]
    return np.log1p(used / scale).reshape(len(used), -1).astype(np.float32)


def store_frames(group, source, start: int, stop: int) -> np.ndarray:
    """Frames ``[start, stop)`` of ``source`` with the noise the store's build added.

    Parameters
    ----------
    group : zarr.Group
        A complete ccfkit store built from ``source``.
    source : ccfkit.io.source.FrameSource
    start, stop : int

    Returns
    -------
    (stop - start, H, W) float32 array
        The frames its maps and images were made from (:func:`ccfkit.noise.add_noise`
        with the store's seed and bound).
    """
    from ccfkit.noise import add_noise, bounds_of_statistics
    from ccfkit.store import read_recipe

    recipe = read_recipe(group)
    bound = float(group.attrs["noise"]["bound"]) if recipe.noise.value != "none" else 0.0
    frames = source.reader.read(start, stop).astype(np.float32, copy=False)
    # each frame's bound from the statistics the build stored (no second pass over the frames)
    bounds = bounds_of_statistics(group["stats"][start:stop], recipe.noise, bound)
    return add_noise(frames, np.arange(start, stop), bounds, recipe.seed, out=frames)


def store_plans(group, source) -> tuple[list, np.ndarray]:
    """The polar plans the store's maps were made with, and each frame's.

    Made as the build makes them (:func:`ccfkit.pipeline.build`): the store's
    centre, mask and rings, the pixel positions of ``source`` (a module stack
    seen through its geometry), and rings in q placed by
    :func:`ccfkit.frame_geometry.place_rings` with the store's placement, so
    that frames of several wavelengths or distances get their group's plan.

    Parameters
    ----------
    group : zarr.Group
        A complete ccfkit store built from ``source``.
    source : ccfkit.io.source.FrameSource

    Returns
    -------
    specs : list of ccfkit.polar.PlanSpec
        One per geometry group (one for a store with one plan).
    which : (N,) int64 array
        Each frame's index into ``specs``.

    Raises
    ------
    ValueError
        The store's radii or its frames' geometry groups are not those made
        here, or its frames were resampled at their own beam centres.
    """
    from dataclasses import replace

    from ccfkit.frame_geometry import place_rings
    from ccfkit.polar import PlanSpec
    from ccfkit.store import read_recipe
    from ccfkit.store.recipe import read_q_placement

    if "frame_center" in group:
        raise ValueError("its frames were resampled at their own beam centres")
    grid = read_recipe(group).resolved_grid
    placed = place_rings(source, grid, read_q_placement(group))
    spec = PlanSpec.describe(source.frame_shape, center=tuple(group.attrs["center"]),
                             mask=group["mask"][:], grid=grid, pixels=source.pixels,
                             scattering=placed.scattering)  # fmt: skip
    if not np.allclose(spec.plan().radius, group["radius"][:]):
        raise ValueError("the rings resampled here are not the store's")
    stored = group["frame_geometry"][:, 2] if "frame_geometry" in group else None
    if placed.groups is None:
        if stored is not None:
            raise ValueError("its rings in q are placed per frame, here at one geometry")
        return [spec], np.zeros(source.n_frames, dtype=np.int64)
    if stored is None or not np.array_equal(stored, placed.groups.group):
        raise ValueError("its frames' geometry groups are not those made here")
    specs = [replace(spec, scattering=geometry) for geometry in placed.groups.geometries]
    return specs, placed.groups.group.astype(np.int64)


def store_features(store, source, *, backend="numpy", ring_used=None) -> np.ndarray:
    """The features of every frame of ``store``, from the frames of ``source``.

    Each frame is resampled with the plan its map was made with
    (:func:`store_plans`); a ring its own plan does not use (too few valid
    samples where its group places it) has zero features, as its map has
    zeros there. The features are those of the store's used rings, or of
    ``ring_used``.

    Parameters
    ----------
    store : str
        A complete ccfkit store built from ``source`` (its centre, mask, ring
        grid, q placement, noise seed and bound are used).
    source : ccfkit.io.source.FrameSource
        The frames the store was built from (module stacks with their geometry
        where the store was built with one).
    backend : str
    ring_used : (Q,) bool array, optional
        The rings whose features are kept [the store's ``ring_used``]: another
        store's, for an SVM trained on that store's features that scores the
        frames of this one (an ``--eval-source`` built with the same rings).

    Returns
    -------
    (N, U * len(ORDERS)) float32 array
        U used rings.

    Raises
    ------
    ValueError
        See :func:`store_plans`; ``ring_used`` not one flag per ring of the store.
    """
    from ccfkit.store import open_store

    group = open_store(store)
    try:
        specs, which = store_plans(group, source)
    except ValueError as error:
        raise ValueError(f"{store}: {error}") from None
    ring_used = group["ring_used"][:] if ring_used is None else np.asarray(ring_used, dtype=bool)
    if ring_used.shape != group["ring_used"].shape:
        raise ValueError(f"{store}: {group['ring_used'].shape[0]} rings, the features' "
                         f"{ring_used.shape[0]}")  # fmt: skip
    out = np.empty((source.n_frames, int(ring_used.sum()) * len(ORDERS)), dtype=np.float32)
    # each plan made once (PlanSpec.plan caches only a few), kept until its last batch
    last = last_batches(which, len(specs), BATCH_FRAMES)
    plans = {}
    for batch, start in enumerate(range(0, source.n_frames, BATCH_FRAMES)):
        stop = min(start + BATCH_FRAMES, source.n_frames)
        frames = store_frames(group, source, start, stop)
        for index in np.unique(which[start:stop]):  # the frames of one plan together
            rows = np.flatnonzero(which[start:stop] == index)
            if index not in plans:
                plans[index] = specs[index].plan()
            plan = plans[index]
            harmonics = ring_harmonics(frames[rows], plan, backend=backend)
            harmonics[:, ~plan.ring_used] = 0.0
            out[start + rows] = feature_vectors(harmonics, ring_used)
            if last[index] == batch:  # no later batch needs it
                del plans[index]
    return out


def last_batches(which, n_plans: int, batch_frames: int) -> np.ndarray:
    """The last batch of frames that needs each plan.

    Parameters
    ----------
    which : (N,) int array
        Each frame's plan, an index below ``n_plans``.
    n_plans : int
    batch_frames : int
        Frames per batch: batch ``b`` holds frames ``b * batch_frames`` on.

    Returns
    -------
    (n_plans,) int64 array
        Per plan the index of the last batch with one of its frames; -1 for
        a plan no frame has.
    """
    last = np.full(n_plans, -1, dtype=np.int64)
    np.maximum.at(last, np.asarray(which, dtype=np.int64), np.arange(len(which)) // batch_frames)
    return last


def _one_label(kernel_train, kernel_rest, y, c: float, class_weight) -> np.ndarray:
    """Predictions of one label's RBF SVM from precomputed kernels (bool rows)."""
    from sklearn.svm import SVC

    if y.all() or not y.any():  # never (or always) on in training: that constant
        return np.full(len(kernel_rest), bool(y[0]))
    svm = SVC(kernel="precomputed", C=c, class_weight=class_weight).fit(kernel_train, y)
    return svm.predict(kernel_rest).astype(bool)


def _weight_name(class_weight) -> str:
    return "none" if class_weight is None else str(class_weight)


def choose_class_weights(label_accuracy: dict, y_train) -> tuple[list, np.ndarray, np.ndarray]:
    """Each label's class weight: the one most accurate on validation.

    Parameters
    ----------
    label_accuracy : dict
        class weight -> (C,) float array, each label's validation accuracy with it;
        on a tie the first key wins.
    y_train : (T, C) bool array
        The training labels (a label of one class there is a constant).

    Returns
    -------
    names : list of str
        Per label ``"balanced"``, ``"none"``, or ``"constant"`` (one class in training).
    chosen : (C,) int64 array
        Per label the index of its class weight among the keys of ``label_accuracy``
        (a constant label's: any, it predicts the same with every weight).
    accuracy : (C,) float array
        Each label's validation accuracy with its class weight.
    """
    weights = list(label_accuracy)
    table = np.stack([label_accuracy[w] for w in weights])  # (W, C)
    chosen = np.argmax(table, axis=0)  # the first of the best
    constant = np.asarray(y_train).all(axis=0) | ~np.asarray(y_train).any(axis=0)
    names = ["constant" if one else _weight_name(weights[i])
             for i, one in zip(chosen, constant)]  # fmt: skip
    return names, chosen, table[chosen, np.arange(table.shape[1])]


def fit_and_predict(features, labels, split: dict, c_values=C_VALUES,
                    class_weights=CLASS_WEIGHTS) -> tuple[np.ndarray, dict]:  # fmt: skip
    """Fit on the training rows, choose ``C`` and weights on validation, predict the test rows.

    :func:`fit_and_predict_many` without other frames.

    Returns
    -------
    predicted : (T, C) bool array
        On ``split["test"]``.
    info : dict
        As :func:`fit_and_predict_many`.
    """
    predicted, _, info = fit_and_predict_many(features, labels, split, (), c_values,
                                              class_weights)  # fmt: skip
    return predicted, info


def fit_and_predict_many(features, labels, split: dict, others=(), c_values=C_VALUES,
                         class_weights=CLASS_WEIGHTS) -> tuple[np.ndarray, list, dict]:  # fmt: skip
    """Fit on the training rows, choose ``C`` and class weights on validation, predict the rest.

    One RBF SVM per label (one-vs-rest) with ``gamma = "scale"`` on the
    standardised features, ``1 / (D var)``; the kernel matrices are computed
    once and shared by every label, ``C`` and class weight
    (``kernel="precomputed"``, the same classifier as ``SVC(kernel="rbf")``
    without its per-label kernel evaluations). For every ``C`` each label
    takes the class weight of ``class_weights`` most accurate on the
    validation split (:func:`choose_class_weights`); the ``C`` kept is the
    one whose labels, so weighted, have the best micro accuracy there. On
    validation the baseline is thus never less accurate than with either
    class weight for every label. ``others`` are predicted by the very SVMs
    that predict the test rows (standardised with the training split's scaler).

    Parameters
    ----------
    features : (N, D) float array
    labels : (N, C) 0/1 array
    split : dict
        ``train``, ``validation``, ``test`` row indices.
    others : sequence of (M_i, D) float arrays
        Features of other frames (another source's).
    c_values : sequence of float
    class_weights : sequence of {"balanced", None}
        The class weights tried [:data:`CLASS_WEIGHTS`]; on a tie the first wins.

    Returns
    -------
    predicted : (T, C) bool array
        On ``split["test"]``.
    on_others : list of (M_i, C) bool arrays
    info : dict
        ``C`` (chosen), ``validation_accuracy`` (micro, per C tried, with its
        class weights), ``class_weight`` (per label at the chosen C: ``"balanced"``,
        ``"none"`` or ``"constant"``), ``label_validation_accuracy`` (class
        weight -> per-label accuracy at the chosen C), ``gamma``, ``seconds``.
    """
    from sklearn.metrics.pairwise import rbf_kernel
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    labels = np.asarray(labels).astype(bool)
    scaler = StandardScaler().fit(features[split["train"]])
    train, validation, test = (scaler.transform(features[split[k]]).astype(np.float64)
                               for k in ("train", "validation", "test"))  # fmt: skip
    rest = np.concatenate([test, *(scaler.transform(o).astype(np.float64) for o in others)])
    gamma = 1.0 / (train.shape[1] * train.var()) if train.var() > 0 else 1.0
    k_train = rbf_kernel(train, gamma=gamma)
    k_scored = np.concatenate([rbf_kernel(validation, train, gamma=gamma),
                               rbf_kernel(rest, train, gamma=gamma)])  # fmt: skip
    y_train, y_validation = labels[split["train"]], labels[split["validation"]]
    n_validation = len(validation)
    guesses, per_label, scores, names, chosen = {}, {}, {}, {}, {}
    for c in c_values:
        for weight in class_weights:  # every SVM predicts validation and the rest at once
            guesses[c, weight] = np.stack([_one_label(k_train, k_scored, y_train[:, j], c, weight)
                                           for j in range(labels.shape[1])], axis=1)  # fmt: skip
            per_label[c, weight] = (guesses[c, weight][:n_validation] == y_validation).mean(0)
        weighted = {w: per_label[c, w] for w in class_weights}
        names[c], chosen[c], accuracy = choose_class_weights(weighted, y_train)
        scores[c] = float(accuracy.mean())  # micro: every label has the same rows
    best = max(c_values, key=lambda c: (scores[c], -c_values.index(c)))
    predicted = np.stack([guesses[best, class_weights[i]][n_validation:, j]
                          for j, i in enumerate(chosen[best])], axis=1)  # fmt: skip
    ends = np.cumsum([len(test), *(len(o) for o in others)])
    info = {"C": best, "validation_accuracy": {str(c): s for c, s in scores.items()},
            "class_weight": names[best],
            "label_validation_accuracy": {_weight_name(w): per_label[best, w].tolist()
                                          for w in class_weights},
            "gamma": float(gamma), "seconds": time.perf_counter() - started}  # fmt: skip
    return predicted[: ends[0]], np.split(predicted, ends[:-1])[1:], info


def cache_record(store: str, source, split: dict, build, *, content: str | None = None) -> dict:
    """What an SVM's test predictions depend on: the key of its cache.

    The frames (their fingerprint and files), the store parameters of
    :data:`FRAME_PARAMETERS` and ``q_range`` (None: the ring grid's default),
    the split, the orders, the C values and class weights tried and the
    rule choosing the weights (``class_weight``), and what else places the
    rings: the geometry file's text of module stacks (``geometry``, None for
    flat frames) and the store's ``q_placement`` attribute as the build
    wrote it (rings in q per frame with their groups, at the mean, at one
    geometry, or rings in pixels; ``{}`` for a store written before it).
    ``content``: what ``source`` holds where it is known already
    (:func:`ccfsort.study_eval.source_content`) [its frames' fingerprint,
    read here].
    """
    from ccfkit.store import open_store

    frame_build = {k: v for k, v in build.parameters().items() if k in FRAME_PARAMETERS}
    q_range = build.grid.q_range
    frame_build["q_range"] = None if q_range is None else list(q_range)
    content = source.describe()["fingerprint"] if content is None else content
    return {"input": content, "files": list(source.reader.files),
            "build": frame_build,
            "split": {k: np.asarray(v).tolist() for k, v in sorted(split.items())},
            "orders": ORDERS, "C": C_VALUES,
            "class_weight": {"tried": [_weight_name(w) for w in CLASS_WEIGHTS],
                             "chosen": "per label on validation"},
            "geometry": None if source.pixels is None else source.pixels.text,
            "q_placement": dict(open_store(store).attrs.get("q_placement", {}))}  # fmt: skip


def _key(record: dict) -> str:
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def eval_cache_record(record: dict, eval_store: str, eval_source, build, content: str) -> dict:
    """The key of an SVM's predictions on another source: its own and that source's.

    ``record`` is the SVM's :func:`cache_record`; the other source enters
    with its files and ``content`` (:func:`ccfsort.study_eval.source_content`:
    its frames' fingerprint and a digest of its labels), its store's
    parameters and ring placement (:func:`cache_record` of ``eval_store``),
    so that a source of other frames (or the same path rewritten) is never
    served another's predictions.
    """
    frames = cache_record(eval_store, eval_source, {}, build, content=content)
    return {"svm": record, "eval_source": frames}


def _load_predictions(cache: Path) -> tuple[np.ndarray, dict]:
    with np.load(cache) as saved:
        return saved["predicted"], json.loads(str(saved["meta"]))


def _save_predictions(cache: Path, predicted, meta: dict) -> None:
    from ccfkit.atomic import atomic_output

    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(cache, overwrite=True) as tmp, open(tmp, "wb") as file:
        np.savez(file, predicted=predicted, meta=json.dumps(meta))


def _fit_missing(store, source, truth, split, caches: dict, eval_sources: dict, backend
                 ) -> None:  # fmt: skip
    """Fit the SVM once and write every cache of ``caches`` that is missing.

    ``caches``: ``None`` (the test split) or an eval source's path -> its
    file. The test predictions are the same on every fit (the SVM has no
    randomness); a cached file is left as it is.
    """
    from ccfkit.store import open_store

    missing = [k for k, path in caches.items() if not path.is_file()]
    if not missing:
        return
    ring_used = open_store(store)["ring_used"][:]
    features = store_features(store, source, backend=backend)
    others = [store_features(eval_sources[k][0], eval_sources[k][1], backend=backend,
                             ring_used=ring_used) for k in missing if k is not None]  # fmt: skip
    predicted, on_others, meta = fit_and_predict_many(features, truth, split, others)
    meta["features"] = int(features.shape[1])
    on_sources = dict(zip([k for k in missing if k is not None], on_others))
    for key in missing:
        _save_predictions(caches[key], predicted if key is None else on_sources[key],
                          meta if key is None else {**meta, "eval_source": key})  # fmt: skip


def svm_baseline(out: Path, store: str, source, split: dict, build, *, backend="auto",
                 eval_sources: dict | None = None) -> dict:  # fmt: skip
    """The SVM's test metrics on the frames of ``store`` (computed once, then cached).

    Parameters
    ----------
    out : Path
        The study directory (the cache is ``out/baselines``).
    store : str
        The arm's store.
    source : ccfkit.io.source.FrameSource
        Its frames.
    split : dict
        The study's split.
    build : ccfkit.build_config.BuildConfig
        The arm's build (its :data:`FRAME_PARAMETERS` key the cache).
    backend : str
        Engine backend of the resampling (the study's ``[build_options] backend``).
    eval_sources : dict, optional
        Another source's path -> ``(store, FrameSource, content)``: its store
        built with ``build``, its frames and what they hold
        (:func:`ccfsort.study_eval.source_content`). The same SVM predicts all its frames,
        their features resampled as that store's maps were made
        (:func:`store_features` with the rings of ``store``); cached per
        source (:func:`eval_cache_record`).

    Returns
    -------
    dict
        ``summary`` (accuracy, precision, recall, violation_rate, ... of
        :meth:`trainer.metrics.Metrics.summary`), ``counts`` ((T, 4) per-frame
        counts, :func:`ccfsort.verdicts.frame_counts`), ``C``, ``class_weight``
        (label name -> ``"balanced"``, ``"none"`` or ``"constant"``), the validation
        accuracies of :func:`fit_and_predict_many`, ``features`` (their number),
        ``seconds``; with ``eval_sources``, ``eval_sources``:
        path -> :func:`svm_on_source`.
    """
    from trainer.data import inspect_store, open_store
    from trainer.metrics import compute_metrics

    from .verdicts import frame_counts

    eval_sources = eval_sources or {}
    record = cache_record(store, source, split, build)
    caches = {None: out / "baselines" / f"svm-{_key(record)}.npz"}
    for path, (eval_store, eval_frames, content) in eval_sources.items():
        key = _key(eval_cache_record(record, eval_store, eval_frames, build, content))
        caches[path] = out / "baselines" / f"svm-eval-{key}.npz"
    info = inspect_store(store)
    truth = open_store(store)["labels"][:].astype(bool)
    _fit_missing(store, source, truth, split, caches, eval_sources, backend)
    predicted, meta = _load_predictions(caches[None])
    test_truth = truth[split["test"]]
    metrics = compute_metrics(test_truth, predicted, info.label_names, info.exclusive_groups)
    result = {"summary": metrics.summary(), "counts": frame_counts(test_truth, predicted), **meta,
              "class_weight": dict(zip(info.label_names, meta["class_weight"]))}  # fmt: skip
    if eval_sources:
        result["eval_sources"] = {
            path: svm_on_source(_load_predictions(caches[path])[0], eval_store, info)
            for path, (eval_store, *_) in eval_sources.items()
        }  # fmt: skip
    return result


def svm_on_source(predicted, eval_store: str, info) -> dict:
    """The SVM's metrics on every frame of another source.

    Scored on the labels the source has, as the runs are
    (:func:`ccfsort.study_eval.score_predictions`); the constants there are
    scored once per source (:func:`ccfsort.study.baselines`).

    Parameters
    ----------
    predicted : (N, C) bool array
        The SVM's predictions of the N frames of ``eval_store``.
    eval_store : str
    info : trainer.data.StoreInfo
        The arm's store (its label names and exclusive groups).

    Returns
    -------
    dict
        ``summary`` (:meth:`trainer.metrics.Metrics.summary` keys), ``per_class``
        (:meth:`~trainer.metrics.Metrics.to_dict` rows), ``counts`` ((N, 4)),
        ``unscored_labels``, ``ignored_labels``.
    """
    from .study_eval import score_predictions

    result, counts = score_predictions(predicted, info.label_names, info.exclusive_groups,
                                       eval_store)  # fmt: skip
    rows = ("per_class", "unscored_labels", "ignored_labels")
    return {
        "summary": {k: v for k, v in result.items() if k not in rows},
        "per_class": result["per_class"],
        "counts": counts,
        "unscored_labels": result["unscored_labels"],
        "ignored_labels": result["ignored_labels"],
    }


def svm_baselines(plan, out: Path, stores: dict, sources: dict, split: dict,
                  eval_sources: dict | None = None) -> dict:  # fmt: skip
    """arm key -> :func:`svm_baseline` of its store, from the frames it was built from.

    Parameters
    ----------
    plan : ccfsort.study_plan.StudyPlan
    out : Path
        The study directory.
    stores : dict
        arm key -> its store's path.
    sources : dict
        arm key -> the :class:`ccfkit.io.source.FrameSource` its store was built
        from (the study's frames, or module stacks with their geometry).
    split : dict
        The study's split.
    eval_sources : dict, optional
        arm key -> {path of an ``--eval-source`` -> (its store built with the
        arm's build, its FrameSource, its :func:`~ccfsort.study_eval.source_content`)}:
        the arm's SVM scores those too.

    Returns
    -------
    dict
        For every arm with a complete store (a report of unfinished work
        has none for the others); an arm whose rings cannot be resampled
        again has none, with a warning.
    """
    from ccfkit.store import StoreError, open_store

    from .study_plan import build_config

    backend = plan.config.get("build_options", {}).get("backend", "auto")
    out_svm = {}
    for arm in plan.arms.values():
        try:
            complete = open_store(stores[arm.key]).attrs.get("status") == "complete"
        except (StoreError, OSError, ValueError):
            complete = False
        if not complete:
            continue
        name = Path(stores[arm.key]).name
        try:
            out_svm[arm.key] = svm_baseline(out, stores[arm.key], sources[arm.key], split,
                                            build_config(arm.build), backend=backend,
                                            eval_sources=(eval_sources or {}).get(arm.key))  # fmt: skip
        except ValueError as error:  # a store whose rings this resampling does not give
            log.warning("no SVM baseline on the frames of %s: %s", name, error)
            continue
        log.info("RBF SVM on the frames of %s: accuracy %.3f", name,
                 out_svm[arm.key]["summary"]["accuracy"])  # fmt: skip
    return out_svm
