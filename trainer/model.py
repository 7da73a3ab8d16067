"""The pre-activation ResNet of the paper, with the logarithmic activation (docs/training.md).

Layout (He et al. 2016, "Identity mappings in deep residual networks"; the
paper's §3.1.5 and Supplement Table 2)::

    input (B, 1, H, W)
    stem:   conv 7x7/2, 64  ->  log activation (Eq. 11) or LeakyReLU  ->  max-pool 3x3/2
    stages: 64, 128, 256, 512 channels (x4 for bottleneck blocks), the first
            block of stages 2-4 has stride 2; inside every block
            BN -> act -> conv [-> BN -> act -> conv ...], plus the shortcut
            (identity, or a 1x1 conv of the *pre-activated* input when the
            shape changes)
    final:  BN -> LeakyReLU                              (end of forward_features)
    head:   global average pool -> fully connected to C logits   (forward_head)

The logarithmic activation is used only after the first convolution (§5.1);
LeakyReLU with leakage 0.2 everywhere else. The outputs are logits: apply a
sigmoid for the per-class probabilities (multi-label).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = [
    "ARCHS",
    "LogActivation",
    "ModelConfig",
    "PreActResNet",
    "build_model",
    "log_activation",
    "log_activation_grad",
]

#: Blocks per stage and block type of each depth (Supplement Table 2).
ARCHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}

#: Eq. 11 constants: with these h(0) = 0 and h is antisymmetric.
C0 = math.exp(-1.0)
C1 = 1.0


def log_activation(x: torch.Tensor, alpha: float = 0.2, c0: float = C0, c1: float = C1):
    """The logarithmic activation of Eq. 11 (elementwise).

    ``h(x) = alpha (log(x + c0) + c1)`` for ``x >= 0`` and
    ``-alpha (log(c0 - x) + c1)`` for ``x < 0``. With ``c0 = e^-1, c1 = 1``
    it is antisymmetric, ``h(0) = 0``, and its derivative (Eq. 12) is
    ``alpha / (|x| + c0)``: ``alpha / c0`` at ``x = 0`` from both sides.

    Written with ``|x|`` computed as ``where(x >= 0, x, -x)`` so that autograd
    gives Eq. 12 everywhere, including ``x = 0`` (``torch.abs`` has gradient 0
    there).
    """
    positive = x >= 0
    magnitude = torch.where(positive, x, -x)
    value = alpha * (torch.log(magnitude + c0) + c1)
    return torch.where(positive, value, -value)


def log_activation_grad(x: torch.Tensor, alpha: float = 0.2, c0: float = C0) -> torch.Tensor:
    """Eq. 12: ``alpha / (x + c0)`` for ``x >= 0``, ``alpha / (c0 - x)`` for ``x < 0``."""
    return torch.where(x >= 0, alpha / (x + c0), alpha / (c0 - x))


class LogActivation(nn.Module):
    """Eq. 11 as a module (``alpha``, ``c0``, ``c1`` fixed, not trained)."""

    def __init__(self, alpha: float = 0.2, c0: float = C0, c1: float = C1):
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha, self.c0, self.c1 = alpha, c0, c1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return log_activation(x, self.alpha, self.c0, self.c1)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, c0={self.c0:.6g}, c1={self.c1}"


@dataclass(frozen=True)
class ModelConfig:
    """Everything that determines the network (saved with every run and checkpoint).

    Attributes
    ----------
    num_classes : int
        ``C``: one logit per label of the store.
    arch : int
        Depth: 18, 34 (basic blocks), 50, 101 (bottleneck blocks).
    in_channels : int
        1 for CCF maps and single-channel images.
    log_act : bool
        Eq. 11 after the first conv; False gives the paper's "unmodified" net
        (LeakyReLU there too).
    alpha, c0, c1 : float
        Eq. 11 constants.
    leak : float
        LeakyReLU negative slope everywhere else.
    width : int
        Channels of the stem and first stage (64 in the paper; small values
        make tiny test models). Stages have width, 2, 4, 8 x width.
    """

    num_classes: int
    arch: int = 18
    in_channels: int = 1
    log_act: bool = True
    alpha: float = 0.2
    c0: float = C0
    c1: float = C1
    leak: float = 0.2
    width: int = 64

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {self.arch}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.width < 1:
            raise ValueError(f"width must be >= 1, got {self.width}")

    def to_dict(self) -> dict:
        return asdict(self)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _projection(cin: int, cout: int, stride: int) -> nn.Module | None:
    """The 1x1 shortcut convolution of a block that changes shape, else None (identity)."""
    if stride == 1 and cin == cout:
        return None
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class PreActBasicBlock(nn.Module):
    """BN -> act -> conv3x3 -> BN -> act -> conv3x3, plus the shortcut."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, leak: float):
        super().__init__()
        cout = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(cin)
        self.act1 = nn.LeakyReLU(leak)
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.LeakyReLU(leak)
        self.conv2 = _conv3x3(planes, cout)
        self.shortcut = _projection(cin, cout, stride)

    def forward(self, x):
        pre = self.act1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.act2(self.bn2(out)))
        return out + shortcut


class PreActBottleneck(nn.Module):
    """BN -> act -> conv1x1 -> BN -> act -> conv3x3 -> BN -> act -> conv1x1 (x4)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, leak: float):
        super().__init__()
        cout = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(cin)
        self.act1 = nn.LeakyReLU(leak)
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.LeakyReLU(leak)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.act3 = nn.LeakyReLU(leak)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.shortcut = _projection(cin, cout, stride)

    def forward(self, x):
        pre = self.act1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.act2(self.bn2(out)))
        out = self.conv3(self.act3(self.bn3(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """The classifier; see the module docstring for the layout."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        kind, counts = ARCHS[config.arch]
        block = PreActBasicBlock if kind == "basic" else PreActBottleneck
        w = config.width
        self.conv1 = nn.Conv2d(config.in_channels, w, 7, stride=2, padding=3, bias=False)
        self.act1 = (
            LogActivation(config.alpha, config.c0, config.c1)
            if config.log_act
            else nn.LeakyReLU(config.leak)
        )
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        cin = w
        for i, count in enumerate(counts):
            planes = w * 2**i
            blocks = []
            for j in range(count):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(cin, planes, stride, config.leak))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(cin)
        self.act = nn.LeakyReLU(config.leak)
        self.fc = nn.Linear(cin, config.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", a=config.leak)

    def stage_modules(self) -> list[nn.Module]:
        """The network's stages in order: the stem (conv1), then the four block stages."""
        return [self.conv1, *self.stages]

    def freeze(self, count: int) -> None:
        """Freeze the first ``count`` stages (:meth:`stage_modules`) for fine-tuning.

        Their parameters stop requiring gradients (the optimiser leaves them
        as they are) and their BatchNorm layers stay in eval mode, also after
        :meth:`train` (their running statistics are kept too). ``count = 0``
        freezes nothing; the final BatchNorm and the head are never frozen.
        """
        stages = self.stage_modules()
        if not 0 <= count <= len(stages):
            raise ValueError(f"freeze must be in 0..{len(stages)}, got {count}")
        self._frozen_stages = stages[:count]
        for module in self._frozen_stages:
            for parameter in module.parameters():
                parameter.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True):
        """Training mode, except the BatchNorm layers of the frozen stages (:meth:`freeze`)."""
        super().train(mode)
        for stage in getattr(self, "_frozen_stages", ()):
            for module in stage.modules():
                if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
                    module.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> the last feature maps (B, F, H/32, W/32), pre-activated."""
        x = self.pool(self.act1(self.conv1(x)))
        x = self.stages(x)
        return self.act(self.norm(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Feature maps -> (B, C) logits: global average pool and the fully connected layer."""
        return self.fc(features.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_model(config: ModelConfig) -> PreActResNet:
    """The network of ``config``, freshly initialised (seed torch first for reproducibility)."""
    return PreActResNet(config)
