"""Grad-CAM++ heatmaps over the input (Chattopadhyay et al. 2018; the paper's §6).

For a class score ``S`` (the logit) and the last feature maps ``A^k`` (the
output of :meth:`PreActResNet.forward_features`), with ``g = dS/dA``::

    a_ij^k = g^2 / (2 g^2 + sum_ab A_ab^k g^3)      (0 where g = 0)
    w_k    = sum_ij a_ij^k relu(g_ij^k)
    L      = relu(sum_k w_k A^k)

upsampled bilinearly to the input size and scaled to [0, 1] (min to max, as
pytorch-grad-cam does). A map whose spread is float rounding (at most
:data:`FLAT_SPREAD` of its largest value, e.g. a 1 x 1 feature map, which
upsamples to a constant) is flat: all zeros, not its noise stretched. The split
``forward_features`` / ``forward_head`` gives ``A`` and ``S`` directly, so no
hooks are needed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["FLAT_SPREAD", "grad_cam_pp", "save_heatmap"]

#: A heatmap spread (max - min) at most this fraction of its largest value is flat.
FLAT_SPREAD = 1e-6


def grad_cam_pp(model, x: torch.Tensor, class_index: int) -> tuple[np.ndarray, float]:
    """Grad-CAM++ map of one input.

    Parameters
    ----------
    model : PreActResNet
        In eval mode.
    x : (1, C_in, H, W) tensor
    class_index : int
        Which output's logit to explain.

    Returns
    -------
    heatmap : (H, W) float ndarray in [0, 1]
        All zeros when the map is flat (nothing stands out).
    probability : float
        The sigmoid of the explained logit.
    """
    model.eval()
    features = model.forward_features(x)
    features.retain_grad()
    logits = model.forward_head(features)
    score = logits[0, class_index]
    model.zero_grad(set_to_none=True)
    score.backward()
    a = features.detach()[0]
    g = features.grad.detach()[0]
    g2, g3 = g.pow(2), g.pow(3)
    denom = 2 * g2 + a.sum(dim=(1, 2), keepdim=True) * g3
    alpha = torch.where(g != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), 0.0)
    weights = (alpha * F.relu(g)).sum(dim=(1, 2))
    cam = F.relu((weights[:, None, None] * a).sum(dim=0))
    cam = F.interpolate(cam[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)
    cam = cam[0, 0]
    low, span = cam.min(), cam.max() - cam.min()
    flat = span <= FLAT_SPREAD * cam.abs().max()  # also an all-zero map
    cam = torch.zeros_like(cam) if flat else (cam - low) / span
    return cam.numpy(), float(torch.sigmoid(score).item())


def save_heatmap(path, image: np.ndarray, heatmap: np.ndarray, title: str) -> None:
    """A PNG with the input, the heatmap, and the heatmap over the input.

    Written to ``path`` exactly (no suffix added), whole, and marked as this
    tool's (:func:`ccfkit.outputs.our_picture` recognises it).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 3)
    shown = np.sign(image) * np.log1p(np.abs(image))
    lo, hi = np.percentile(shown, [1, 99]) if shown.size else (0, 1)
    if hi <= lo:
        lo, hi = float(shown.min()), float(shown.max()) + 1e-12
    axes[0].imshow(shown, cmap="gray", origin="lower", vmin=lo, vmax=hi)
    axes[0].set_title("input (signed log1p)")
    axes[1].imshow(heatmap, cmap="jet", origin="lower", vmin=0, vmax=1)
    axes[1].set_title("Grad-CAM++")
    axes[2].imshow(shown, cmap="gray", origin="lower", vmin=lo, vmax=hi)
    axes[2].imshow(heatmap, cmap="jet", origin="lower", alpha=0.45, vmin=0, vmax=1)
    axes[2].set_title("overlay")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    from ccfkit.atomic import atomic_output

    with atomic_output(path, overwrite=True) as partial:  # whole, marked as this tool's
        fig.savefig(
            partial, dpi=100, format="png", metadata={"Software": "ccfkit trainer explain"}
        )
