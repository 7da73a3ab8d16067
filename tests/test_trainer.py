"""The trainer: Eq. 11/12, the network, the §3.2 metrics, the loader, training,
resuming and DDP (docs/training.md). Tiny data made on the fly; one torch thread."""

from __future__ import annotations

import copy
import csv
import math
import os
import pickle
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr
from click.testing import CliRunner

from ccfkit.simulate import LABELS as SIMULATED_LABELS
from trainer.config import TrainConfig
from trainer.data import (
    ChunkBatchSampler,
    DataError,
    StoreDataset,
    flip_masks,
    inspect_store,
    make_loader,
    resolve_normalize,
)
from trainer.inference import load_run
from trainer.loop import fit, regularization, resume, train_step
from trainer.metrics import all_negative_accuracy, compute_metrics, violation_rate
from trainer.model import (
    LogActivation,
    ModelConfig,
    PreActResNet,
    build_model,
    log_activation,
    log_activation_grad,
)

ALPHA = 0.2
N_LABELS = len(SIMULATED_LABELS)  # the label columns of a `ccfkit simulate` file
C0 = math.exp(-1)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """64 simulated frames -> 32 x 32 CCF maps and 32 x 32 images, chunks of 16 frames."""
    from ccfkit.cli import main as ccfkit_main

    root = tmp_path_factory.mktemp("store")
    cxi, store = root / "sim.cxi", root / "maps.zarr"
    runner = CliRunner()
    result = runner.invoke(
        ccfkit_main, ["simulate", str(cxi), "--n", "64", "--size", "64", "--seed", "1", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        ccfkit_main,
        [
            "build", str(cxi), str(store), "--q-bins", "32", "--phi-bins", "64", "--keep-images",
            "--image-size", "32", "--chunk", "16", "--backend", "numpy", "--quiet",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return str(store)


def read_csv(path, *, drop=()) -> list[dict]:
    """The rows of a CSV file as dicts of strings, without the columns ``drop``."""
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(handle)]


def tiny_model(num_classes=N_LABELS, **kw) -> PreActResNet:
    torch.manual_seed(0)
    return build_model(ModelConfig(num_classes=num_classes, width=8, **kw))


def tiny_train(store, **kw) -> TrainConfig:
    base = {
        "store": store,
        "epochs": 2,
        "batch_size": 16,
        "workers": 0,
        "device": "cpu",
        "lr": 0.05,
    }
    base.update(kw)
    return TrainConfig(**base)


# --------------------------------------------------------------------------
# Eq. 11 and Eq. 12
# --------------------------------------------------------------------------


def test_log_activation_values():
    x = torch.tensor([0.0, 1.0, -1.0, 10.0, -0.5], dtype=torch.float64)
    expected = [
        0.0,  # alpha (log(e^-1) + 1) = 0
        ALPHA * (math.log(1 + C0) + 1),
        -ALPHA * (math.log(C0 + 1) + 1),
        ALPHA * (math.log(10 + C0) + 1),
        -ALPHA * (math.log(C0 + 0.5) + 1),
    ]
    got = log_activation(x, ALPHA)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-15)
    # The module uses the same constants (c0 = e^-1, c1 = 1 per docs/training.md).
    np.testing.assert_allclose(LogActivation(ALPHA)(x).numpy(), expected, rtol=1e-12, atol=1e-15)
    # Other alpha scales linearly.
    np.testing.assert_allclose(
        log_activation(x, 0.5).numpy(), np.array(expected) * 2.5, rtol=1e-12
    )


def test_log_activation_antisymmetric_and_monotone():
    x = torch.linspace(-50, 50, 2001, dtype=torch.float64)
    h = log_activation(x, ALPHA)
    np.testing.assert_allclose(h.numpy(), -log_activation(-x, ALPHA).numpy(), rtol=0, atol=1e-14)
    assert torch.all(torch.diff(h) > 0)


def test_log_activation_derivative_eq12():
    # Away from 0 and at 0 exactly: autograd equals Eq. 12 (alpha / c0 = alpha e at x = 0).
    x = torch.tensor([-3.0, -1e-3, 0.0, 1e-3, 0.7, 25.0], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(log_activation(x, ALPHA).sum(), x)
    eq12 = torch.where(x >= 0, ALPHA / (x + C0), ALPHA / (C0 - x)).detach()
    np.testing.assert_allclose(grad.numpy(), eq12.numpy(), rtol=1e-12)
    np.testing.assert_allclose(log_activation_grad(x.detach(), ALPHA).numpy(), eq12.numpy())
    assert grad[2].item() == pytest.approx(ALPHA * math.e, rel=1e-12)
    # Central differences agree with Eq. 12 where h is smooth.
    xs = torch.tensor([-2.0, -0.3, 0.4, 5.0], dtype=torch.float64)
    eps = 1e-6
    fd = (log_activation(xs + eps, ALPHA) - log_activation(xs - eps, ALPHA)) / (2 * eps)
    np.testing.assert_allclose(fd.numpy(), log_activation_grad(xs, ALPHA).numpy(), rtol=1e-7)
    # And torch's own checker (double precision, points away from the kink).
    y = torch.tensor([-2.0, -0.3, 0.4, 5.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: log_activation(t, ALPHA), (y,))


# --------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------


@pytest.mark.parametrize("arch,width", [(18, 8), (34, 4), (50, 4), (101, 2)])
def test_output_shape(arch, width):
    model = build_model(ModelConfig(num_classes=11, arch=arch, width=width)).eval()
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    expansion = 4 if arch >= 50 else 1
    assert features.shape == (3, 8 * width * expansion, 2, 2)  # 64 / 32
    assert logits.shape == (3, 11)


def test_resnet18_feature_maps_at_paper_width():
    model = build_model(ModelConfig(num_classes=11)).eval()  # width 64
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 1, 64, 64))
    assert features.shape == (2, 512, 2, 2)
    assert model.fc.in_features == 512 and model.fc.out_features == 11


def expected_preact_resnet18_params(in_channels: int, classes: int, w: int = 64) -> int:
    """Parameter count from the layer shapes (weights + BN gamma/beta + fc bias)."""
    total = in_channels * w * 7 * 7  # stem conv, no bias
    cin = w
    for stage, planes in enumerate([w, 2 * w, 4 * w, 8 * w]):
        for block in range(2):
            total += 2 * cin  # bn1 on the block input
            total += 9 * cin * planes  # conv1 3x3
            total += 2 * planes  # bn2
            total += 9 * planes * planes  # conv2 3x3
            if cin != planes:
                total += cin * planes  # 1x1 projection shortcut, no bias, no BN
            cin = planes
    total += 2 * cin  # final BN
    total += cin * classes + classes  # fc
    return total


def test_parameter_count_resnet18():
    model = build_model(ModelConfig(num_classes=11, arch=18))
    count = sum(p.numel() for p in model.parameters())
    assert count == expected_preact_resnet18_params(1, 11)
    # Cross-check with torchvision's (post-activation) resnet18: 11,689,512 parameters
    # with 3 inputs and 1000 classes. Minus its stem conv (9,408), fc (513,000), stem BN
    # (128) and shortcut BNs (1,792); the pre-activation BNs sit on the block inputs
    # (-128 - 256 - 512) and a final BN is added (+1,024); plus our stem (3,136) and fc
    # (5,643) -> 11,174,091.
    assert count == 11_174_091


def test_preactivation_order():
    model = tiny_model()
    calls = []
    block = model.stages[1][0]  # stride 2, with a projection shortcut
    for name, module in block.named_children():
        module.register_forward_hook(lambda m, i, o, name=name: calls.append((name, i[0], o)))
    for name in ("conv1", "act1", "pool"):
        getattr(model, name).register_forward_hook(
            lambda m, i, o, name=name: calls.append(("stem." + name, i[0], o))
        )
    model(torch.randn(2, 1, 32, 32))
    names = [c[0] for c in calls]
    assert names[:3] == ["stem.conv1", "stem.act1", "stem.pool"]
    inner = [n for n in names[3:] if n != "shortcut"]
    assert inner == ["bn1", "act1", "conv1", "bn2", "act2", "conv2"]
    out = {n: o for n, _, o in calls}
    inp = {n: i for n, i, _ in calls}
    # BN -> act -> conv: each layer consumes the previous one's output ...
    assert inp["act1"] is out["bn1"] and inp["conv1"] is out["act1"]
    assert inp["act2"] is out["bn2"] and inp["conv2"] is out["act2"]
    # ... and the projection shortcut takes the pre-activated input (He et al. 2016).
    assert inp["shortcut"] is out["act1"]
    assert isinstance(model.act1, LogActivation) and model.act1.alpha == 0.2
    assert isinstance(tiny_model(log_act=False).act1, torch.nn.LeakyReLU)
    assert isinstance(block.act1, torch.nn.LeakyReLU) and block.act1.negative_slope == 0.2


def test_regularization_value():
    model = tiny_model()
    l1 = sum(
        m.weight.abs().sum()
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    )
    l2 = sum(
        m.weight.pow(2).sum()
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    )
    got = regularization(model, 1e-5, 2e-5)
    assert got.item() == pytest.approx(1e-5 * l1.item() + 2e-5 * l2.item(), rel=1e-6)


def test_train_step_minimises_bce_plus_the_penalty_with_one_sgd_step():
    model = tiny_model()
    model.train()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4, 1, 32, 32, generator=generator)
    y = (torch.rand(4, model.config.num_classes, generator=generator) > 0.5).float()
    # the gradient the step must take: that of BCE + penalty at the same weights
    reference = copy.deepcopy(model)
    expected_bce = F.binary_cross_entropy_with_logits(reference(x), y)
    penalty = regularization(reference, 1e-3, 1e-3)
    (expected_bce + penalty).backward()
    before = model.fc.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # no momentum: one plain step
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss, bce = train_step(model, x, y, optimizer, scaler, l1=1e-3, l2=1e-3)
    assert bce.item() == pytest.approx(expected_bce.item(), rel=1e-6)
    assert loss.item() == pytest.approx(expected_bce.item() + penalty.item(), rel=1e-6)
    expected = before - 0.1 * reference.fc.weight.grad
    torch.testing.assert_close(model.fc.weight.detach(), expected, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------
# Metrics (§3.2)
# --------------------------------------------------------------------------


def test_metrics_hand_computed():
    names = ["A", "B", "C"]
    truth = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1]])
    pred = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1], [1, 1, 0]])
    # Per cell: TP = (0,0),(1,0),(2,2),(3,1) = 4; FP = (0,1),(3,0) = 2;
    # FN = (1,1),(3,2) = 2; TN = 12 - 8 = 4.
    m = compute_metrics(truth, pred, names, groups=[["A", "C"], ["A", "B"]])
    assert (m.tp, m.fp, m.fn, m.tn) == (4, 2, 2, 4)
    assert m.accuracy == pytest.approx(8 / 12)
    assert m.precision == pytest.approx(4 / 6)
    assert m.recall == pytest.approx(4 / 6)
    # Frames 0 and 3 predict A and B together: 2 of 4 frames break a group.
    assert m.violation_rate == pytest.approx(0.5)
    a, b, c = m.per_class
    assert (a.precision, a.recall, a.accuracy, a.support, a.predicted) == (2 / 3, 1.0, 3 / 4, 2, 3)
    assert (b.precision, b.recall, b.accuracy, b.support) == (1 / 2, 1 / 2, 2 / 4, 2)
    assert (c.precision, c.recall, c.accuracy, c.support) == (1.0, 1 / 2, 3 / 4, 2)
    # The all-negative model: precision and recall 0 (not nan), accuracy = negatives.
    zero = compute_metrics(truth, np.zeros_like(truth), names)
    assert (zero.precision, zero.recall, zero.accuracy) == (0.0, 0.0, 6 / 12)
    assert all_negative_accuracy(truth) == pytest.approx(6 / 12)
    # §3.2's example: everything Spherical/Oblate only.
    assert violation_rate(np.ones((2, 3)), names, [["A", "B", "C"]]) == 1.0
    assert violation_rate(np.eye(3), names, [["A", "B", "C"]]) == 0.0


# --------------------------------------------------------------------------
# Store access and the loader
# --------------------------------------------------------------------------


def test_inspect_store_and_errors(tiny_store, tmp_path):
    info = inspect_store(tiny_store)
    assert info.n_frames == 64 and info.chunk_frames == 16
    assert info.label_names[0] == "spherical_oblate"
    assert ("round", "elliptical") in info.exclusive_groups
    assert info.shapes == {"ccf": (32, 32), "images": (32, 32)}
    with pytest.raises(DataError, match="no such store"):
        inspect_store(tmp_path / "missing.zarr")
    # A hand-written store with the documented layout but incomplete / no labels / no images.
    path = tmp_path / "bad.zarr"
    g = zarr.open_group(str(path), mode="w")
    g.create_array("ccf", shape=(4, 8, 8), chunks=(2, 8, 8), dtype="float32")
    g.attrs.update({"tool": "ccfkit", "schema_version": 1, "status": "incomplete"})
    with pytest.raises(DataError, match="not 'complete'"):
        inspect_store(path)
    g.attrs["status"] = "complete"
    with pytest.raises(DataError, match="no labels"):
        inspect_store(path)
    assert inspect_store(path, need_labels=False).n_frames == 4
    with pytest.raises(DataError, match="no 'images' array"):
        inspect_store(path, need_labels=False, input_kind="images")


def test_sampler_is_chunk_grouped_and_partitions_for_ddp():
    idx = np.arange(5, 200)
    s = ChunkBatchSampler(idx, chunk_frames=16, batch_size=12, group_chunks=2, seed=1)
    s.set_epoch(3)
    batches = s.batches()
    flat = np.concatenate(batches)
    assert np.array_equal(np.sort(flat), idx)  # every frame once
    pools = [np.unique(b // 16) for b in batches]
    assert max(len(p) for p in pools) <= 4  # a batch straddles at most two pools of 2 chunks
    s.set_epoch(4)
    assert not np.array_equal(np.concatenate(s.batches()), flat)  # reshuffled per epoch
    # Two ranks together see exactly the global batches, in order.
    ranks = [
        ChunkBatchSampler(idx, 16, 12, group_chunks=2, seed=1, rank=r, world_size=2)
        for r in (0, 1)
    ]
    for r in ranks:
        r.set_epoch(3)
    parts = [list(r) for r in ranks]
    for k, batch in enumerate(batches):
        joined = np.sort(np.concatenate([parts[0][k][1], parts[1][k][1]]))
        assert np.array_equal(joined, np.sort(batch))


def isin_epoch_order(idx, chunk_frames, group_chunks, seed, epoch):
    """The epoch order as first written (one ``np.isin`` per pool): the reference."""
    rng = np.random.default_rng([seed, epoch])
    chunk_of = idx // chunk_frames
    chunks = np.unique(chunk_of)
    rng.shuffle(chunks)
    parts = [
        rng.permutation(idx[np.isin(chunk_of, chunks[s : s + group_chunks])])
        for s in range(0, len(chunks), group_chunks)
    ]
    return np.concatenate(parts) if parts else idx


@pytest.mark.parametrize("group_chunks", [1, 3, 50])
def test_sampler_order_is_the_pooled_shuffle(group_chunks):
    rng = np.random.default_rng(0)
    cases = [np.arange(5, 200), np.sort(rng.choice(1000, 300, replace=False)), rng.permutation(97)]
    for idx in cases:
        for epoch in (0, 7):
            s = ChunkBatchSampler(idx, 16, 10, group_chunks=group_chunks, seed=3)
            s.set_epoch(epoch)
            flat = np.concatenate(s.batches())
            np.testing.assert_array_equal(flat, isin_epoch_order(idx, 16, group_chunks, 3, epoch))
            assert np.array_equal(np.sort(flat), np.sort(idx))  # every frame exactly once


def test_sampler_batches_aligned_with_pools_touch_at_most_group_chunks_chunks():
    # Whole chunks and batch = group_chunks chunks: every batch is exactly one pool.
    for epoch in range(5):
        s = ChunkBatchSampler(np.arange(256), 16, 32, group_chunks=2, seed=epoch)
        s.set_epoch(epoch)
        batches = s.batches()
        assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(256))
        assert all(len(np.unique(b // 16)) <= 2 for b in batches)


@pytest.mark.parametrize("n", [0, 1, 2, 11, 12, 13, 35, 36, 37, 195])
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_len_is_the_number_of_batches_it_yields(n, world, drop_last):
    for rank in range(world):
        s = ChunkBatchSampler(
            np.arange(7, 7 + n), 16, 12, drop_last=drop_last, rank=rank, world_size=world
        )
        s.set_epoch(2)
        assert len(s) == len(list(s)), (rank, world)


def test_dataset_reads_rows_flips_and_pickles_without_handle(tiny_store):
    g = zarr.open_group(tiny_store, mode="r")
    rows = np.array([3, 17, 18, 40, 63])
    ds = StoreDataset(tiny_store, "ccf")
    x, y, idx = ds[(0, rows)]
    assert x.shape == (5, 1, 32, 32) and y.shape == (5, N_LABELS)
    np.testing.assert_array_equal(x[:, 0].numpy(), g["ccf"][:][rows])
    np.testing.assert_array_equal(y.numpy(), g["labels"][:][rows])
    np.testing.assert_array_equal(idx.numpy(), rows)
    assert ds._group is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._group is None and not clone._cache  # workers open their own handle
    # Images, per-frame max scaling, flips drawn from (seed, epoch, frame).
    every = np.arange(64)
    flipped = StoreDataset(tiny_store, "images", flips=True, normalize="max", seed=5)
    xa = flipped[(2, every)][0][:, 0].numpy()
    xb = flipped[(2, every)][0][:, 0].numpy()
    np.testing.assert_array_equal(xa, xb)
    raw = g["images"][:]
    raw = raw / raw.reshape(64, -1).max(axis=1)[:, None, None]
    for k in every:
        candidates = [raw[k], raw[k, :, ::-1], raw[k, ::-1, :], raw[k, ::-1, ::-1]]
        assert any(np.allclose(xa[k], c, rtol=1e-6) for c in candidates)
        assert np.abs(xa[k]).max() == pytest.approx(1.0)
    # The flips do something: some of the 64 frames (3/4 each) come out changed ...
    changed = [not np.allclose(xa[k], raw[k], rtol=1e-6) for k in every]
    assert 16 <= sum(changed) < 64
    # ... and without flips none are.
    plain = StoreDataset(tiny_store, "images", normalize="max", seed=5)[(2, every)][0][:, 0]
    np.testing.assert_allclose(plain.numpy(), raw, rtol=1e-6)


def test_flips_of_a_frame_do_not_depend_on_its_batch(tiny_store):
    ds = StoreDataset(tiny_store, "images", flips=True, seed=5)
    whole = ds[(2, np.arange(64))][0][:, 0].numpy()
    rows = np.array([40, 3, 63, 17, 18])
    for batch in (rows, rows[::-1], rows[:2], np.array([17])):
        part = ds[(2, batch)][0][:, 0].numpy()
        np.testing.assert_array_equal(part, whole[batch])
    masks = flip_masks(5, 2, np.arange(64))
    np.testing.assert_array_equal(flip_masks(5, 2, rows), masks[rows])
    # Another epoch or seed draws again.
    assert not np.array_equal(flip_masks(5, 3, np.arange(64)), masks)
    assert not np.array_equal(flip_masks(6, 2, np.arange(64)), masks)


def test_flip_masks_are_fair_and_independent_per_axis():
    masks = flip_masks(0, 0, np.arange(20_000))
    assert masks.shape == (20_000, 2) and masks.dtype == bool
    assert abs(masks.mean(axis=0) - 0.5).max() < 0.02
    both = np.mean(masks[:, 0] & masks[:, 1])
    assert abs(both - 0.25) < 0.02
    assert flip_masks(0, 0, np.arange(0)).shape == (0, 2)


def test_normalize_auto_is_resolved_by_the_dataset(tiny_store):
    assert resolve_normalize("auto", "images") == "max"
    assert resolve_normalize("auto", "ccf") == "none"
    assert resolve_normalize("none", "images") == "none"
    assert resolve_normalize("max", "ccf") == "max"
    with pytest.raises(ValueError):
        resolve_normalize("min", "ccf")
    assert StoreDataset(tiny_store, "images").normalize == "max"
    assert StoreDataset(tiny_store, "ccf", normalize="auto").normalize == "none"
    x = StoreDataset(tiny_store, "images")[(0, np.arange(8))][0]
    assert x.abs().amax(dim=(1, 2, 3)).numpy() == pytest.approx(1.0)
    assert TrainConfig(store=tiny_store, input="images").input_normalize == "max"


def test_spawned_worker_gives_the_same_batches(tiny_store):
    ds = StoreDataset(tiny_store, "ccf")
    sampler = ChunkBatchSampler(np.arange(64), 16, 16, seed=0)
    sampler.set_epoch(1)
    direct = [b[2].numpy() for b in make_loader(ds, sampler, 0)]
    spawned = make_loader(ds, sampler, 1)
    got = [(b[0].numpy(), b[2].numpy()) for b in spawned]
    del spawned
    assert [g[1].tolist() for g in got] == [d.tolist() for d in direct]
    stored = zarr.open_group(tiny_store, mode="r")["ccf"][:]
    for x, rows in got:
        np.testing.assert_array_equal(x[:, 0], stored[rows])


# --------------------------------------------------------------------------
# Learning, resuming, DDP
# --------------------------------------------------------------------------


def test_overfits_a_batch_of_16(tiny_store):
    x, y, _ = StoreDataset(tiny_store, "ccf")[(0, np.arange(16))]
    model = tiny_model()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    first = None
    for step in range(150):
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        final = F.binary_cross_entropy_with_logits(model(x), y).item()
        predicted = torch.sigmoid(model(x)) >= 0.5
    assert first > 0.4
    assert final < 0.02  # memorised: BCE near 0 in eval mode too
    assert torch.equal(predicted, y.bool())


def test_resume_continues_exactly(tiny_store, tmp_path):
    model_cfg = ModelConfig(num_classes=N_LABELS, width=8)
    cfg = tiny_train(tiny_store, epochs=4, lr_step=2, input="images")  # flips + lr drop included
    fit(tmp_path / "straight", model_cfg, cfg, progress=False)
    fit(
        tmp_path / "split",
        model_cfg,
        tiny_train(tiny_store, epochs=2, lr_step=2, input="images"),
        progress=False,
    )
    resume(tmp_path / "split", epochs=4, progress=False)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 4
    assert a["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.05 * 0.1**2)
    wall_clock = ("seconds", "samples_per_s")  # differ between runs
    assert read_csv(tmp_path / "straight" / "metrics.csv", drop=wall_clock) == read_csv(
        tmp_path / "split" / "metrics.csv", drop=wall_clock
    )
    assert np.array_equal(
        np.load(tmp_path / "straight" / "split.npz")["eval"],
        np.load(tmp_path / "split" / "split.npz")["eval"],
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, run_dir, store):
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    torch.set_num_threads(1)
    fit(
        run_dir,
        ModelConfig(num_classes=N_LABELS, width=8),
        tiny_train(store, epochs=3),
        progress=False,
    )
    torch.distributed.destroy_process_group()


def test_ddp_two_processes_match_one(tiny_store, tmp_path):
    import torch.multiprocessing as mp

    single = fit(
        tmp_path / "one",
        ModelConfig(num_classes=N_LABELS, width=8),
        tiny_train(tiny_store, epochs=3),
        progress=False,
    )
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "two"), tiny_store), nprocs=2)
    one, two = (read_csv(tmp_path / run / "metrics.csv") for run in ("one", "two"))
    assert len(two) == 3
    # Same global batches and gradients; only BatchNorm statistics differ (each of the 2
    # processes normalises its own half-batch on CPU), so losses agree to a few percent.
    for r1, r2 in zip(one, two):
        assert float(r2["train_bce"]) == pytest.approx(float(r1["train_bce"]), rel=0.05)
    assert float(two[-1]["eval_loss"]) == pytest.approx(float(one[-1]["eval_loss"]), rel=0.1)
    # The two final models give nearly the same eval probabilities. (Accuracy on 10 x 6
    # labels moves in steps of 1/60 and flips where p ~ 0.5, so it gets a wide band.)
    probs = []
    for run in ("one", "two"):
        model, _, _ = load_run(tmp_path / run, "last")
        x, _, _ = StoreDataset(tiny_store, "ccf")[
            (0, np.load(tmp_path / run / "split.npz")["eval"])
        ]
        with torch.no_grad():
            probs.append(torch.sigmoid(model(x)).numpy())
    assert np.abs(probs[0] - probs[1]).mean() < 0.03
    assert abs(float(two[-1]["accuracy"]) - single["final"]["accuracy"]) <= 0.2


def test_predict_and_evaluate_on_other_stores(tiny_store, tmp_path):
    from trainer.inference import evaluate_run, predict_run

    run_dir = tmp_path / "run"
    fit(
        run_dir,
        ModelConfig(num_classes=N_LABELS, width=8),
        tiny_train(tiny_store, epochs=1),
        progress=False,
    )
    # A store without labels, written by hand in the documented layout (rows 10..19).
    src = zarr.open_group(tiny_store, mode="r")
    other = tmp_path / "unlabelled.zarr"
    g = zarr.open_group(str(other), mode="w")
    g.create_array("ccf", data=src["ccf"][10:20], chunks=(4, 32, 32))
    g.create_array("index", data=np.arange(100, 110, dtype=np.int64), chunks=(4,))
    g.attrs.update({"tool": "ccfkit", "schema_version": 1, "status": "complete"})
    assert predict_run(run_dir, str(other), tmp_path / "p.csv") == 10
    rows = read_csv(tmp_path / "p.csv")
    assert [int(r["index"]) for r in rows] == list(range(100, 110))
    # Same probabilities as predicting those rows of the original store.
    model, _, _ = load_run(run_dir)
    x, _, _ = StoreDataset(tiny_store, "ccf")[(0, np.arange(10, 20))]
    with torch.no_grad():
        p = torch.sigmoid(model(x)).numpy()
    got = np.array(
        [[float(r[f"p_{n}"]) for n in inspect_store(tiny_store).label_names] for r in rows]
    )
    np.testing.assert_allclose(got, p, atol=2e-6)  # the CSV keeps 6 decimals
    with pytest.raises(DataError, match="no labels"):
        evaluate_run(run_dir, str(other))
    # The run's own store: the eval split by default, every frame with subset="all".
    metrics, extra = evaluate_run(run_dir)
    assert extra["subset"] == "eval" and metrics.n_frames == 10
    metrics, extra = evaluate_run(run_dir, tiny_store, subset="all")
    assert metrics.n_frames == 64


def test_maps_of_several_orders_train_as_channels(tmp_path):
    """A store of (N, 2, Q, Q) maps (orders 8 and 2): the model takes 2 input channels."""
    from ccfkit.cli import main as ccfkit_main

    cxi, store = tmp_path / "sim.cxi", tmp_path / "maps.zarr"
    runner = CliRunner()
    for args in (
        ["simulate", str(cxi), "--n", "32", "--size", "48", "--seed", "2", "--quiet"],
        ["build", str(cxi), str(store), "--q-bins", "16", "--phi-bins", "32", "--orders", "8,2",
         "--chunk", "16", "--backend", "numpy", "--quiet"],
    ):  # fmt: skip
        result = runner.invoke(ccfkit_main, args)
        assert result.exit_code == 0, result.output
    x, _, _ = StoreDataset(str(store), "ccf")[(0, np.arange(4))]
    expected = zarr.open_group(str(store), mode="r")["ccf"][:4]
    assert tuple(x.shape) == (4, 2, 16, 16)
    np.testing.assert_array_equal(x.numpy(), expected)  # channels kept as stored
    report = fit(tmp_path / "run", ModelConfig(num_classes=N_LABELS, width=8),
                 tiny_train(str(store), epochs=1), progress=False)  # fmt: skip
    model, config = load_run(tmp_path / "run")[:2]
    assert config["model"]["in_channels"] == 2
    assert model.conv1.in_channels == 2
    assert 0.0 <= report["final"]["accuracy"] <= 1.0
