"""The thesis FC net 784-100x5-10 and the hard-coded Random-FC structure (SPEC §5)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .masks import attach_masks, set_masks

FC_SIZES = (784, 100, 100, 100, 100, 100, 10)


class FC(nn.Module):
    """Flatten -> [Linear -> ReLU] x 5 -> Linear.

    Args:
        sizes: layer widths, input first. Default 784-100x5-10.
        hidden_bias: biases on the hidden layers (thesis SynFlow/random/dense: yes; Gem-Miner: no).
        output_bias: bias on the last layer (thesis: no).

    Input (B, 1, 28, 28) or (B, 784); output logits (B, 10).  The prunable layers
    are ``layers.0`` ... ``layers.5``, weights (out, in).
    """

    def __init__(self, sizes: tuple[int, ...] = FC_SIZES, hidden_bias: bool = True,
                 output_bias: bool = False):
        super().__init__()
        self.spec = {"name": "fc", "kwargs": {"hidden_bias": hidden_bias, "output_bias": output_bias}}
        self.input_shape = (1, 28, 28)
        n = len(sizes) - 1
        self.layers = nn.ModuleList(
            nn.Linear(sizes[i], sizes[i + 1], bias=hidden_bias if i < n - 1 else output_bias)
            for i in range(n))
        attach_masks(self)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


def fc(hidden_bias: bool = True, output_bias: bool = False) -> FC:
    """The thesis FC (784-100x5-10), PyTorch default init, masks attached (all ones)."""
    return FC(FC_SIZES, hidden_bias=hidden_bias, output_bias=output_bias)


# (placements n, row range R) per layer of the thesis's rnd_fc (Layers/layers.py:rnd_Linear).
RANDOM_FC_PLACEMENTS = ((600, 6), (400, 30), (400, 30), (400, 30), (400, 30), (200, 10))


def random_fc_mask(out_features: int, in_features: int, n: int, rows: int,
                   generator: torch.Generator) -> Tensor:
    """The thesis's random placement rule for one layer, as a bool (out, in) mask.

    Each of ``n`` placements draws (x, y), x in [0, rows), y in [0, in), until
    mask[x, y] is free, sets it, sets mask[x+1, y], and if mask[x, y+1] is free sets
    it and then mask[x, y+2] if free.  An out-of-range index ends the placement.
    """
    mask = torch.zeros(out_features, in_features, dtype=torch.bool)
    for _ in range(n):
        while True:
            x = int(torch.randint(0, rows, (1,), generator=generator))
            y = int(torch.randint(0, in_features, (1,), generator=generator))
            if not mask[x, y]:
                break
        mask[x, y] = True
        if x + 1 >= out_features:
            continue
        mask[x + 1, y] = True
        if y + 1 >= in_features:
            continue
        if not mask[x, y + 1]:
            mask[x, y + 1] = True
            if y + 2 < in_features and not mask[x, y + 2]:
                mask[x, y + 2] = True
    return mask


def random_fc_masks(model: FC, generator: torch.Generator) -> dict[str, Tensor]:
    """The Random-FC masks (SPEC §5) for the layers of a thesis FC, drawn from ``generator``."""
    return {f"layers.{i}": random_fc_mask(layer.out_features, layer.in_features, n, rows, generator)
            for i, (layer, (n, rows)) in enumerate(zip(model.layers, RANDOM_FC_PLACEMENTS))}


def random_fc(seed: int) -> FC:
    """The thesis's Random-FC "7%" net: the FC with hard-coded random masks (≈6.8% density).

    The masks come from the ``prune`` stream of ``seed``; seed torch's global RNG
    first (``torch.manual_seed``) if the weight init must be reproducible too.
    """
    from utils.engine.seeding import generator
    model = fc()
    set_masks(model, random_fc_masks(model, generator(seed, "prune")))
    return model
