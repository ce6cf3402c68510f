"""ResNet-20 for CIFAR-10 (SPEC §5): option B (1x1 conv shortcuts, thesis) or option A."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .masks import attach_masks


class PadShortcut(nn.Module):
    """Option A: parameter-free stride-2 subsampling with zero-padded channels."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, ::2, ::2]
        extra = self.out_channels - x.shape[1]
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))


class ChannelScale(nn.Module):
    """An identity shortcut that carries a per-channel weight (C, 1, 1), initialised to 1: the
    OpenLTH-style ``Identity2d`` of the thesis's ResNet-20.  Its weight is never pruned; the
    thesis's SynFlow/random runs kept it at 1, its Gem-Miner finetune trained it."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN (+ shortcut), then ReLU.  Shortcut is ``shortcut`` (or identity,
    optionally with a per-channel weight: :class:`ChannelScale`)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str,
                 prune_shortcut: bool, identity_weights: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride == 1 and in_channels == out_channels:
            self.shortcut = ChannelScale(out_channels) if identity_weights else nn.Identity()
        elif shortcut == "B":
            conv = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
            conv.prunable = prune_shortcut
            self.shortcut = nn.Sequential(conv, nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = PadShortcut(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20: conv1(3->16)-BN-ReLU, 9 BasicBlocks (16/32/64 channels), global avg pool, fc 64->10.

    Input (B, 3, 32, 32), output logits (B, 10).  Prunable layers in state-dict order:
    ``conv1``, ``blocks.i.conv1``, ``blocks.i.conv2`` and, for option B with
    ``prune_shortcuts``, ``blocks.3.shortcut.0`` / ``blocks.6.shortcut.0``, then ``fc``.
    """

    def __init__(self, shortcut: str = "B", prune_shortcuts: bool = True, fc_bias: bool = True,
                 num_classes: int = 10, identity_weights: bool = False):
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        kwargs = {"shortcut": shortcut, "prune_shortcuts": prune_shortcuts, "fc_bias": fc_bias}
        if identity_weights:
            kwargs["identity_weights"] = True
        self.spec = {"name": "resnet20", "kwargs": kwargs}
        self.input_shape = (3, 32, 32)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, channels = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(3):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(channels, width, stride, shortcut, prune_shortcuts, identity_weights))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes, bias=fc_bias)
        self._init_weights()
        attach_masks(self)

    def _init_weights(self) -> None:
        # Kaiming-normal on conv and linear weights, BN γ=1 β=0, as in the thesis's SynFlow runs.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.blocks(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def resnet20(shortcut: str = "B", prune_shortcuts: bool = True, fc_bias: bool = True,
             identity_weights: bool = False) -> ResNet20:
    """ResNet-20 with masks attached. Thesis SynFlow/random: defaults. Thesis Gem-Miner:
    ``prune_shortcuts=False, fc_bias=False``.  ``identity_weights=True`` gives the identity
    shortcuts the thesis's per-channel weight (the imported thesis networks need it)."""
    return ResNet20(shortcut=shortcut, prune_shortcuts=prune_shortcuts, fc_bias=fc_bias,
                    identity_weights=identity_weights)

