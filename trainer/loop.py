"""The training loop: one :func:`train_step`, epochs, evaluation and checkpoints (docs/training.md).

The recipe is :class:`~trainer.config.TrainConfig`'s; the files of a run are
:mod:`trainer.run_dir`'s; its report is :mod:`trainer.report`'s. Using a
finished run (evaluate, predict) is :mod:`trainer.inference`.

Distributed data parallel: start the same command under ``torchrun``; each
process reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, joins a process group
(NCCL on GPUs, gloo on CPUs) and takes an interleaved slice of every global
batch, so the global batch size stays ``batch_size``. BatchNorm is
synchronised across processes on GPUs (``sync_bn``; torch's SyncBatchNorm
does not run on CPUs, where every process normalises its own slice). Rank 0
evaluates and writes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ccfkit.atomic import atomic_output

from .config import BEST_METRICS, TrainConfig
from .data import (
    ChunkBatchSampler,
    StoreDataset,
    StoreInfo,
    inspect_store,
    load_split,
    make_loader,
)
from .label_table import labelled_store_info
from .metrics import all_negative_accuracy, compute_metrics
from .model import ModelConfig, build_model
from .report import plot_history, write_report
from .run_dir import (
    RUN_LABELS,
    RunError,
    check_same_store,
    checkpoint_state,
    create_run,
    read_run,
    restore_rng_state,
    resumed_configs,
    run_labels,
    save_checkpoint,
    write_json,
    write_metrics_csv,
)

__all__ = [
    "fit",
    "predict_probabilities",
    "regularization",
    "resolve_device",
    "resume",
    "step_throughput",
    "train_step",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------


def regularization(model: nn.Module, l1: float, l2: float) -> torch.Tensor:
    """``l1 * sum |w| + l2 * sum w^2`` over conv and linear weights (Eq. 10)."""
    total = None
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.float()
            term = l1 * w.abs().sum() + l2 * w.pow(2).sum()
            total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    *,
    l1: float,
    l2: float,
    amp: bool = False,
    weights: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a batch: BCE on the logits plus the weight penalty (Eq. 6, 10).

    Parameters
    ----------
    model : nn.Module
        What computes the logits (a DDP wrapper under torchrun).
    x : (B, C, H, W) tensor
        The batch, on the model's device (in channels-last layout where used).
    y : (B, K) float tensor
        0/1 labels.
    optimizer, scaler
        The SGD optimiser and the AMP gradient scaler (disabled without AMP).
    l1, l2 : float
        Weights of the L1 and L2 penalties (:func:`regularization`).
    amp : bool
        Forward pass under autocast (mixed precision).
    weights : nn.Module, optional
        The plain network whose weights are penalised (default ``model``).

    Returns
    -------
    (loss, bce) : scalar tensors
        The minimised loss (BCE + penalty) and the BCE alone.
    """
    with torch.autocast(x.device.type, enabled=amp):
        logits = model(x)
    bce = F.binary_cross_entropy_with_logits(logits.float(), y)
    loss = bce + regularization(model if weights is None else weights, l1, l2)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, bce


def step_throughput(
    model_cfg: ModelConfig,
    input_shape: tuple[int, int],
    *,
    batch_size: int = TrainConfig.batch_size,
    steps: int = 10,
    device: str = "cpu",
    amp: bool = True,
    channels_last: bool = True,
) -> dict:
    """Samples per second of :func:`train_step` on random data (the first 2 steps are warm-up)."""
    dev = resolve_device(device)
    model = build_model(model_cfg).to(dev)
    cl = channels_last and dev.type == "cuda"
    use_amp = amp and dev.type == "cuda"
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(dev.type, enabled=use_amp)
    x = torch.randn(batch_size, model_cfg.in_channels, *input_shape, device=dev)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch_size, model_cfg.num_classes, device=dev) > 0.5).float()
    model.train()

    def step():
        train_step(model, x, y, opt, scaler, l1=TrainConfig.l1, l2=TrainConfig.l2, amp=use_amp)

    for _ in range(2):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    return {"samples_per_s": steps * batch_size / elapsed, "step_s": elapsed / steps}


# --------------------------------------------------------------------------
# Devices, processes, generators
# --------------------------------------------------------------------------


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device of ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (RunError without CUDA)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RunError("--device cuda asked for, but no CUDA device is available")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    return torch.device("cpu")


def _dist_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment (0, 1, 0 without)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@torch.no_grad()
def predict_probabilities(
    model, loader, device, *, amp=False, channels_last=False, label_columns=None
):
    """Sigmoid probabilities over a loader: ``(probs (N, C), labels (N, M), indices (N,), bce)``.

    ``model`` is the plain network (not a DDP wrapper). ``bce`` is the mean
    binary cross-entropy (nan when the store has no labels). ``label_columns``
    ``(run_columns, store_columns)`` pairs output ``run_columns[j]`` with the
    store's label ``store_columns[j]`` (a store whose labels are named or
    ordered otherwise, :mod:`trainer.labels`); ``labels`` then holds those
    store columns and the BCE compares those pairs only. Default: the same
    columns (``M = C``).
    """
    model.eval()
    probs, labels, rows = [], [], []
    total, count = 0.0, 0
    for x, y, idx in loader:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            logits = model(x)
        logits = logits.float().cpu()
        scored = logits
        if label_columns is not None:
            scored, y = logits[:, label_columns[0]], y[:, label_columns[1]]
        if y.shape[1]:
            total += F.binary_cross_entropy_with_logits(scored, y, reduction="sum").item()
            count += y.numel()
        probs.append(torch.sigmoid(logits).numpy())
        labels.append(y.numpy())
        rows.append(idx.numpy())
    c = model.config.num_classes
    m = c if label_columns is None else len(label_columns[1])
    cat = lambda parts, shape: np.concatenate(parts) if parts else np.zeros(shape)
    return (
        cat(probs, (0, c)),
        cat(labels, (0, m)),
        cat(rows, (0,)).astype(np.int64),
        total / count if count else math.nan,
    )


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


def fit(
    run_dir,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    *,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Train a new run into ``run_dir`` (must not exist or be empty, unless ``overwrite``).

    Returns the report dict (rank 0; other DDP ranks get ``{}``).
    """
    run_dir = Path(run_dir)
    info = inspect_store(
        train_cfg.store, input_kind=train_cfg.input, need_labels=train_cfg.labels is None
    )
    if train_cfg.labels is not None:  # hand-made labels (trainer label) instead of the store's
        info = labelled_store_info(info, train_cfg.labels)
    # the store decides the input channels (one per angular order of its maps)
    model_cfg = replace(model_cfg, in_channels=info.channels(train_cfg.input))
    if model_cfg.num_classes != len(info.label_names):
        raise RunError(
            f"the model has {model_cfg.num_classes} outputs but the store has "
            f"{len(info.label_names)} labels"
        )
    init = match = None
    if train_cfg.init is not None:  # fine-tuning: another run's weights (trainer/finetune.py)
        from .finetune import prepare_init

        train_cfg, init, match = prepare_init(model_cfg, train_cfg, info)
    if _dist_env()[0] == 0:
        create_run(run_dir, model_cfg, train_cfg, info, overwrite=overwrite)
        if init is not None:
            from .finetune import record_init

            record_init(run_dir, init, match)
    return _train(run_dir, model_cfg, train_cfg, info, checkpoint=None, progress=progress)


def resume(run_dir, *, epochs: int | None = None, progress: bool = True, **overrides) -> dict:
    """Continue a run from its ``last.pt`` (optionally to a larger number of ``epochs``).

    Parameters
    ----------
    run_dir : str or Path
        The run directory.
    epochs : int, optional
        The new total number of epochs; None keeps the saved one.
    progress : bool
        Show a progress bar (rank 0).
    **overrides
        Only these, each None (keep the saved value) or a new value:
        ``workers`` (DataLoader workers), ``device`` (``auto``, ``cpu``,
        ``cuda[:N]``) and ``store`` (the same store at another path; its
        label names must match). Everything else is the saved recipe.

    Returns
    -------
    dict
        The report (rank 0; other DDP ranks get ``{}``).

    Raises
    ------
    RunError
        Not a run directory, no ``last.pt``, an override outside the list
        above, or a store whose labels differ from the run's.
    """
    run_dir = Path(run_dir)
    config, checkpoint = read_run(run_dir, "last")
    train_cfg, changes = resumed_configs(config, epochs, overrides)
    model_cfg = ModelConfig(**config["model"])
    info = inspect_store(
        train_cfg.store, input_kind=train_cfg.input, need_labels=train_cfg.labels is None
    )
    if train_cfg.labels is not None:
        info = labelled_store_info(info, run_dir / RUN_LABELS)
    check_same_store(run_dir, config, train_cfg, info)
    if _dist_env()[0] == 0 and changes:
        config["train"] = asdict(train_cfg)
        write_json(run_dir / "config.json", config)
    return _train(run_dir, model_cfg, train_cfg, info, checkpoint=checkpoint, progress=progress)


def _restore(checkpoint: dict | None, model, optimizer, scheduler, scaler) -> tuple:
    """``(history, best, first epoch)``: a fresh start, or where ``checkpoint`` left off."""
    if checkpoint is None:
        return [], None, 0
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    scaler.load_state_dict(checkpoint["scaler"])
    restore_rng_state(checkpoint["rng"])
    return list(checkpoint["history"]), checkpoint["best"], checkpoint["epoch"] + 1


def _out_of_time(train_cfg: TrainConfig, started: float, distributed: bool) -> bool:
    """Whether ``max_minutes`` have passed (rank 0's clock decides for every process)."""
    flag = torch.tensor([float(time.perf_counter() - started > 60 * train_cfg.max_minutes)])
    if distributed:
        torch.distributed.broadcast(flag, 0)
    return bool(flag.item())


def _evaluate(model, loader, device, train_cfg: TrainConfig, info, *, amp, channels_last):
    """``(metrics, final dict, eval BCE)`` of ``model`` on the eval (validation) loader."""
    probs, labels, _, bce = predict_probabilities(
        model, loader, device, amp=amp, channels_last=channels_last
    )
    metrics = compute_metrics(
        labels, probs >= train_cfg.threshold, info.label_names, info.exclusive_groups
    )
    final = metrics.to_dict()
    final["all_negative_accuracy"] = all_negative_accuracy(labels)
    return metrics, final, bce


def _train(run_dir, model_cfg, train_cfg, info, *, checkpoint, progress) -> dict:
    """Train from ``checkpoint`` (None: from scratch) to ``train_cfg.epochs``; the report dict.

    Every process runs this; rank 0 evaluates, writes checkpoints, and returns
    the report (the others return ``{}``).
    """
    run = _setup(Path(run_dir), model_cfg, train_cfg, info, checkpoint, progress=progress)
    started = time.perf_counter()
    for epoch in range(run.start_epoch, train_cfg.epochs):
        if (
            train_cfg.max_minutes is not None
            and epoch > run.start_epoch
            and _out_of_time(train_cfg, started, run.distributed)
        ):
            log.warning(
                "time limit of %s min reached after %d epochs", train_cfg.max_minutes, epoch
            )
            break
        totals = _train_one_epoch(run, epoch)
        if run.rank == 0:
            _end_epoch(run, epoch, totals)
        if run.distributed:
            torch.distributed.barrier()
    return _finish(run)


@dataclass
class _Run:
    """What one process works with while it trains a run (made by :func:`_setup`).

    ``model`` is the plain network (evaluated and checkpointed);
    ``train_model`` what the steps run: the same network, or its DDP wrapper.
    ``history``, ``best`` and ``final`` (the metrics of the last epoch run in
    this call) grow epoch by epoch on rank 0.
    """

    run_dir: Path
    cfg: TrainConfig
    info: StoreInfo
    rank: int
    world: int
    device: torch.device
    amp: bool
    channels_last: bool
    model: nn.Module
    train_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    sampler: ChunkBatchSampler
    loader: torch.utils.data.DataLoader | None
    eval_dataset: StoreDataset
    eval_loader: torch.utils.data.DataLoader | None
    test_idx: np.ndarray
    show: bool
    config: dict | None  # config.json, on rank 0
    history: list = field(default_factory=list)
    best: dict | None = None
    start_epoch: int = 0
    final: dict | None = None

    @property
    def distributed(self) -> bool:
        return self.world > 1


def _join(train_cfg: TrainConfig) -> tuple[int, int, torch.device]:
    """``(rank, world size, device)`` of this process, in the process group under torchrun."""
    rank, world, local_rank = _dist_env()
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    device = resolve_device(train_cfg.device, local_rank)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if world > 1:
        torch.distributed.barrier()  # rank 0 has written split.npz and config.json
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return rank, world, device


def _setup(run_dir: Path, model_cfg, train_cfg, info, checkpoint, *, progress) -> _Run:
    """The network, optimiser and loaders of one process, restored from ``checkpoint``."""
    rank, world, device = _join(train_cfg)
    split = load_split(run_dir / "split.npz")
    _seed_all(train_cfg.seed)
    model = build_model(model_cfg).to(device)
    if checkpoint is None and train_cfg.init is not None:  # fine-tuning (trainer/finetune.py)
        from .finetune import start_from_init

        start_from_init(model, run_dir, info.label_names)
    model.freeze(train_cfg.freeze)
    channels_last = train_cfg.channels_last and device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp = train_cfg.amp and device.type == "cuda"
    optimizer = torch.optim.SGD(model.parameters(), lr=train_cfg.lr, momentum=train_cfg.momentum)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=train_cfg.lr_step, gamma=train_cfg.lr_gamma
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    history, best, start_epoch = _restore(checkpoint, model, optimizer, scheduler, scaler)
    train_model = model
    if world > 1:
        if train_cfg.sync_bn and device.type == "cuda":  # SyncBatchNorm is GPU-only
            train_model = nn.SyncBatchNorm.convert_sync_batchnorm(train_model)
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None
        )
        model = train_model.module

    labels = run_labels(run_dir, train_cfg, info)  # None: the store's own labels
    dataset = StoreDataset(
        train_cfg.store,
        train_cfg.input,
        flips=train_cfg.use_flips,
        normalize=train_cfg.normalize,
        seed=train_cfg.seed,
        labels=labels,
    )
    eval_dataset = StoreDataset(
        train_cfg.store, train_cfg.input, normalize=train_cfg.normalize, labels=labels
    )
    sampler = ChunkBatchSampler(
        split["train"],
        info.chunk_frames,
        train_cfg.batch_size,
        group_chunks=train_cfg.group_chunks,
        seed=train_cfg.seed,
        drop_last=len(split["train"]) > train_cfg.batch_size,
        rank=rank,
        world_size=world,
    )
    eval_sampler = ChunkBatchSampler(
        split["validation"], info.chunk_frames, max(train_cfg.batch_size, 64), shuffle=False
    )
    return _Run(
        run_dir=run_dir, cfg=train_cfg, info=info, rank=rank, world=world, device=device,
        amp=amp, channels_last=channels_last, model=model, train_model=train_model,
        optimizer=optimizer, scheduler=scheduler, scaler=scaler, sampler=sampler,
        loader=make_loader(dataset, sampler, train_cfg.workers, pin=device.type == "cuda"),
        eval_dataset=eval_dataset,
        eval_loader=make_loader(eval_dataset, eval_sampler, 0 if world > 1 else train_cfg.workers),
        test_idx=split["test"], show=progress and rank == 0,
        config=json.loads((run_dir / "config.json").read_text()) if rank == 0 else None,
        history=history, best=best, start_epoch=start_epoch,
    )  # fmt: skip


def _train_one_epoch(run: _Run, epoch: int) -> dict:
    """One pass over this process's slice of the training rows, then the scheduler's step.

    Returns ``lr`` (of this epoch), ``loss`` and ``bce`` (sums over the
    frames, over every process), ``seen`` (frames, every process) and
    ``seconds``.
    """
    from tqdm import tqdm

    cfg = run.cfg
    run.sampler.set_epoch(epoch)
    run.train_model.train()
    lr = run.optimizer.param_groups[0]["lr"]
    t0 = time.perf_counter()
    seen = 0
    sum_loss = sum_bce = 0.0
    bar = tqdm(
        total=len(run.sampler),
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        disable=not run.show,
        leave=False,
        dynamic_ncols=True,
    )
    for x, y, rows in run.loader:
        x = x.to(run.device, non_blocking=True)
        y = y.to(run.device, non_blocking=True)
        if run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss, bce = train_step(
            run.train_model, x, y, run.optimizer, run.scaler,
            l1=cfg.l1, l2=cfg.l2, amp=run.amp, weights=run.model,
        )  # fmt: skip
        n = len(x)
        seen += n
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            _stop_on_non_finite(loss_value, epoch, rows)
        sum_loss += loss_value * n
        sum_bce += bce.item() * n
        rate = seen * run.world / max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{rate:.1f}")
        bar.update()
    bar.close()
    run.scheduler.step()
    if run.distributed:
        sums = torch.tensor([sum_loss, sum_bce, seen], dtype=torch.float64)
        torch.distributed.all_reduce(sums)
        sum_loss, sum_bce, seen = sums.tolist()
    return {"lr": lr, "loss": sum_loss, "bce": sum_bce, "seen": seen,
            "seconds": time.perf_counter() - t0}  # fmt: skip


def _stop_on_non_finite(loss: float, epoch: int, rows) -> None:
    """Stop training: the loss of a batch is not finite (the store rows of the batch named)."""
    rows = sorted(int(r) for r in np.asarray(rows).ravel())
    shown = ", ".join(map(str, rows[:16])) + (
        f", ... ({len(rows)} rows)" if len(rows) > 16 else ""
    )
    raise RunError(
        f"the training loss is {loss} in epoch {epoch + 1}, on the batch of store rows {shown} "
        "(non-finite values in those frames' maps, or a learning rate too high); stopped: "
        "last.pt keeps the last finished epoch"
    )


def _end_epoch(run: _Run, epoch: int, totals: dict) -> None:
    """Rank 0 after an epoch: evaluate, log, and write ``last.pt``, ``best.pt``, metrics.csv."""
    from tqdm import tqdm

    cfg = run.cfg
    metrics, run.final, eval_bce = _evaluate(
        run.model, run.eval_loader, run.device, cfg, run.info,
        amp=run.amp, channels_last=run.channels_last,
    )  # fmt: skip
    seen, seconds = totals["seen"], totals["seconds"]
    row = {
        "epoch": epoch,
        "lr": totals["lr"],
        "train_loss": totals["loss"] / max(seen, 1),
        "train_bce": totals["bce"] / max(seen, 1),
        "eval_loss": eval_bce,
        "accuracy": metrics.accuracy,
        "precision": metrics.precision,
        "recall": metrics.recall,
        "violation_rate": metrics.violation_rate,
        "seconds": seconds,
        "samples_per_s": seen / seconds,
    }
    run.history.append(row)
    value, best = row[cfg.best_metric], run.best
    higher_is_better = BEST_METRICS[cfg.best_metric]
    improved = best is None or (
        value > best["value"] if higher_is_better else value < best["value"]
    )
    if improved:
        run.best = {"value": value, "epoch": epoch, "metric": cfg.best_metric, **run.final}
    state = checkpoint_state(
        run.model, run.optimizer, run.scheduler, run.scaler,
        epoch=epoch, best=run.best, history=run.history, config=run.config,
    )  # fmt: skip
    save_checkpoint(run.run_dir / "last.pt", state)
    if improved:
        save_checkpoint(run.run_dir / "best.pt", state)
    write_metrics_csv(run.run_dir / "metrics.csv", run.history)
    msg = (
        f"epoch {epoch + 1}/{cfg.epochs}: loss {row['train_loss']:.4f}, "
        f"eval acc {metrics.accuracy:.4f} prec {metrics.precision:.4f} "
        f"rec {metrics.recall:.4f} viol {metrics.violation_rate:.3f}, "
        f"{row['samples_per_s']:.1f} samples/s"
    )
    log.info(msg)
    if run.show:
        tqdm.write(msg)


def _finish(run: _Run) -> dict:
    """After the last epoch: the best checkpoint scored on the test rows, the report (rank 0)."""
    run.loader = None  # stop the persistent workers now, not at interpreter exit
    report: dict = {}
    if run.rank == 0 and run.history:
        if run.final is None:  # no epoch ran in this call (a finished run resumed): evaluate
            _, run.final, _ = _evaluate(
                run.model, run.eval_loader, run.device, run.cfg, run.info,
                amp=run.amp, channels_last=run.channels_last,
            )  # fmt: skip
        test = None
        if len(run.test_idx):
            test = _score_test(run.run_dir, run.model, run.eval_dataset, run.test_idx, run.info,
                               run.cfg, run.device)  # fmt: skip
        plot_history(run.run_dir, run.history)
        report = write_report(run.run_dir, run.config, run.history, run.final, run.best, test)
    run.eval_loader = None
    if run.distributed:
        torch.distributed.barrier()
    return report


def _score_test(run_dir: Path, model, dataset, test_idx, info, train_cfg, device) -> dict:
    """The best checkpoint (chosen on validation) scored once on the test rows.

    Loads ``best.pt`` into ``model``, writes ``test.npz`` (``rows``, ``probs``
    (N, C) float32, ``labels`` (N, C) uint8) and returns the test metrics dict
    (with ``epoch`` of the checkpoint and ``all_negative_accuracy``).
    """
    best_state = torch.load(run_dir / "best.pt", map_location=device, weights_only=True)
    model.load_state_dict(best_state["model"])
    sampler = ChunkBatchSampler(test_idx, info.chunk_frames, max(train_cfg.batch_size, 64),
                                shuffle=False)  # fmt: skip
    probs, labels, rows, _ = predict_probabilities(model, make_loader(dataset, sampler, 0), device)
    with atomic_output(run_dir / "test.npz", overwrite=True) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, rows=rows, probs=probs.astype(np.float32), labels=labels.astype(np.uint8))
    metrics = compute_metrics(
        labels, probs >= train_cfg.threshold, info.label_names, info.exclusive_groups
    )
    return {
        **metrics.to_dict(),
        "epoch": int(best_state["epoch"]),
        "all_negative_accuracy": all_negative_accuracy(labels),
    }
