"""Pruning without looking at the weights: the dense baseline, random pruning at init, and the
thesis's hand-made Random-FC structure."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.masks import prunable_layers, raw_weight, set_masks
from utils.errors import UserError

from .base import Method, MethodStyle, register

STREAMS = ("ours", "thesis")


@register
class Dense(Method):
    """No pruning: the dense baseline (density must be 1)."""
    name = "dense"
    style = MethodStyle("Dense", "dense", "#333333")

    def prune(self, model, density, *, seed, data_shape):
        if density != 1:
            raise UserError(f"method 'dense' needs density 100, got {100 * density:g}")


def thesis_scores(model: nn.Module, seed: int, levels: int, iterations: int,
                  max_blocks: int = 288) -> dict[str, Tensor]:
    """The scores of the thesis's last random scoring, replayed from its GPU stream.

    The thesis (Synaptic-Flow ``Rand`` in a levels × iterations loop) drew ``randn_like(w)`` for
    every prunable weight, in module order, ``levels · iterations`` times on a CUDA device, and each
    draw replaced the last (its global mask revives weights), so only the last draw decides the
    mask.  :class:`pruners.cuda_stream.CudaNormalStream` replays that draw.

    Args:
        model: the masked model (its prunable layers in module order, as the thesis's).
        seed: the run seed (``torch.manual_seed`` in the thesis).
        levels, iterations: the thesis's ``level_list`` and ``prune_epochs`` (FC 10 × 1, ResNet-20
            10 × 100; three ResNet runs used 1 × 1).
        max_blocks: the thesis GPU's resident-block limit (see the stream).

    Returns:
        ``{layer: float32 scores shaped like its weight}``.
    """
    from .cuda_stream import CudaNormalStream
    shapes = {n: tuple(raw_weight(m).shape) for n, m in prunable_layers(model).items()}
    stream = CudaNormalStream(seed, max_blocks)
    stream.skip(list(shapes.values()), levels * iterations - 1)
    return {n: stream.randn(shape) for n, shape in shapes.items()}


@dataclass
class RandomOptions:
    """Options of random pruning.

    Args:
        scope: ``"global"`` (one top-k over all layers) or ``"layer"``.
        stream: where the scores come from. ``"ours"`` (default): N(0,1) from the run's prune
            stream.  ``"thesis"``: the thesis's own draw, replayed from its GPU stream
            (:func:`thesis_scores`), so a seed gives the thesis's mask for that seed.
        levels, iterations: the thesis's pruning loop (only for ``stream="thesis"``).
        max_blocks: the thesis GPU's resident-block limit (only for ``stream="thesis"``).
    """
    scope: str = "global"
    stream: str = "ours"
    levels: int = 10
    iterations: int = 1
    max_blocks: int = 288

    def __post_init__(self):
        if self.stream not in STREAMS:
            raise UserError(f"unknown random stream {self.stream!r}; choose from {', '.join(STREAMS)}")
        if self.levels < 1 or self.iterations < 1:
            raise UserError(f"levels and iterations must be ≥ 1, got {self.levels} and {self.iterations}")


@register
class Random(Method):
    """Random pruning at init: random scores, then the exact top-k (≈d per layer, binomial; not ERK).

    One shot: the thesis's levels × iterations loop redrew the scores every step and revived
    weights, so only its last draw decides the mask (see :func:`thesis_scores`).
    """
    name = "random"
    Options = RandomOptions
    style = MethodStyle("Random", "rnd", "#0072B2", "^")

    def scores(self, model, *, seed, data_shape, generator):
        o = self.options
        if o.stream == "thesis":
            return thesis_scores(model, seed, o.levels, o.iterations, o.max_blocks)
        return {n: torch.randn(raw_weight(m).shape, generator=generator, dtype=torch.float64)
                for n, m in prunable_layers(model).items()}


@dataclass
class RandomFCOptions:
    """Options of Random-FC.

    Args:
        stream: ``"ours"`` (default): the placements come from the run's prune stream and the
            init is the model's.  ``"thesis"``: the thesis's own draw — it placed each layer's
            weights with torch's global generator while building the net (``rnd_Linear``:
            placements, then the layer's default init), after ``torch.manual_seed(seed)`` and its
            data loader's ``randperm`` over the 60,000 MNIST training images — so a seed gives the
            thesis's masks *and* initial weights.
    """
    stream: str = "ours"

    def __post_init__(self):
        if self.stream not in STREAMS:
            raise UserError(f"unknown Random-FC stream {self.stream!r}; choose from {', '.join(STREAMS)}")


@register
class RandomFC(Method):
    """The thesis's hand-made Random-FC structure (SPEC §5); only for the FC, density ≈6.8 %.

    The requested density is only a label ("7 %" in the thesis); the structure fixes it.
    Not score-based: the placement rule is the mask (:func:`models.fc.random_fc_masks`).
    """
    name = "random-fc"
    Options = RandomFCOptions
    style = MethodStyle("Random-FC", "rfc", "#882255")

    def prune(self, model, density, *, seed, data_shape):
        from models.fc import FC, RANDOM_FC_PLACEMENTS, random_fc_mask, random_fc_masks
        from utils.engine.seeding import generator
        if not isinstance(model, FC) or len(model.layers) != 6:
            raise UserError("method 'random-fc' only applies to the thesis FC (experiment fc_mnist)")
        if self.options.stream == "ours":
            set_masks(model, random_fc_masks(model, generator(seed, "prune")))
            return
        torch.manual_seed(seed)
        torch.randperm(60_000)
        masks = {}
        with torch.no_grad():
            for i, (layer, (n, rows)) in enumerate(zip(model.layers, RANDOM_FC_PLACEMENTS)):
                masks[f"layers.{i}"] = random_fc_mask(layer.out_features, layer.in_features, n, rows,
                                                      torch.default_generator)
                _default_init(raw_weight(layer), layer.bias)
        set_masks(model, masks)


def _default_init(weight: Tensor, bias: Tensor | None) -> None:
    """``nn.Linear``'s default init, drawn from torch's global generator in its order."""
    import math
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1 / math.sqrt(weight.shape[1])
        nn.init.uniform_(bias, -bound, bound)
