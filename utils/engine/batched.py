"""Train K runs of the thesis FC in one process: stacked weights, one batched matmul per layer.

The FC at the thesis's batch of 64 is overhead-bound (64×100 matmuls): one step of one run
costs about as much as one step of several runs whose weights are stacked along a new leading
dimension and multiplied with ``torch.baddbmm``.  Nothing but the arithmetic is shared:

* every run keeps its own init and mask (stacked, ``(K, out, in)``), its own batch order and
  augmentation stream (``generator(seed, "data")``, as :func:`utils.engine.train.train`);
* the loss is the sum of the runs' mean cross-entropies, so each run's gradient is exactly its
  own; SGD (momentum, Nesterov, weight decay) is element-wise, so one optimizer over the
  stacked tensors updates each run as its own optimizer would, at the shared schedule.

The result equals training each run alone up to the float32 accumulation order of ``bmm``
versus ``addmm`` (``tests/test_batched.py`` measures it).  Runs of a :class:`models.fc.FC` are
batched by kind (``Method.batch_kind``): prune-then-train runs, DNW runs (``topk``: each run's
top-k per layer in every forward), and a Gem-Miner run's finetunes (``columns``); DEEPR trains
alone.

Example::

    histories = train_batched([model_a, model_b], data, cfg, seeds=[21, 42])
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from models.masks import density as model_density
from models.masks import mask_of, raw_weight
from pruners.dnw import BandedTopK, ChooseTopEdges
from utils.engine.data import Dataset, batches, normalize
from utils.engine.seeding import generator
from utils.engine.train import (
    PER_STEP_SCHEDULES,
    TrainConfig,
    available_cores,
    history_row,
    make_optimizer,
    make_scheduler,
    pick_device,
    use_bf16,
)
from utils.errors import UserError


class StackedFC:
    """K FC models of one architecture as stacked leaf tensors.

    The weights are stored as the models' *effective* weights (pruned entries zero) and
    transposed, ``(K, in, out)``: ``x @ w`` then needs no transpose and no mask product in the
    forward pass, and the weight gradient arrives contiguous (no copy when autograd
    accumulates it); :meth:`mask_gradients` zeroes the pruned entries' gradients after each
    backward pass.  Kept entries evolve exactly as under the models' ``w * m``
    parametrization (``w * 1 = w``, gradient ``g * 1 = g``); the step is about 1.5× faster
    than ``(w * m).transpose`` (``benchmarks/README.md``).

    Attributes:
        weights: per layer a ``(K, in, out)`` effective weight, transposed.
        masks: per layer a ``(K, in, out)`` float mask, transposed.
        biases: per layer a ``(K, out)`` bias, or None for a layer without bias.
    """

    def __init__(self, models: Sequence[nn.Module], train_biases: bool = True,
                 topk: Sequence[Sequence[int]] | None = None):
        """``topk``: per model, per layer, the number of weights DNW keeps; then the stack holds the
        raw weights and every forward keeps each run's top-k |w| per layer, the gradient passing
        straight through to every entry (:class:`pruners.dnw.ChooseTopEdges`)."""
        self.topk = [list(ks) for ks in topk] if topk is not None else None
        self.selectors = ([BandedTopK([run[depth] for run in self.topk]) for depth in range(len(self.topk[0]))]
                          if self.topk is not None else None)
        layers = [list(m.layers) for m in models]
        if len({_signature(m) for m in models}) != 1:
            raise UserError("batched training needs models of one architecture")
        self.weights, self.masks, self.biases = [], [], []
        # the raw weights as given: pruned entries are restored from them on write-back
        self.initial = [[raw_weight(layer).detach().clone() for layer in ls] for ls in layers]
        for depth in range(len(layers[0])):
            group = [ls[depth] for ls in layers]
            raw = torch.stack([raw_weight(m).detach() for m in group]).transpose(1, 2)
            if self.topk is None:
                mask = torch.stack([mask_of(m) for m in group]).transpose(1, 2).to(raw.dtype).contiguous()
            else:
                mask = torch.ones_like(raw)          # every raw entry trains (straight-through)
            self.masks.append(mask)
            self.weights.append((raw * mask).contiguous().requires_grad_())
            has_bias = group[0].bias is not None
            self.biases.append(torch.stack([m.bias.detach() for m in group]).clone().requires_grad_(train_biases)
                               if has_bias else None)

    def parameters(self) -> list[Tensor]:
        """The trained tensors: the weights, and the biases unless built with ``train_biases=False``."""
        return self.weights + [b for b in self.biases if b is not None and b.requires_grad]

    def forward(self, x: Tensor) -> Tensor:
        """``(K, B, 784)`` → logits ``(K, B, classes)``: ReLU between layers, as ``FC.forward``."""
        last = len(self.weights) - 1
        for depth, (w, b) in enumerate(zip(self.weights, self.biases)):
            if self.topk is not None:
                w = ChooseTopEdges.apply(w, self.topk_masks(depth))     # bool: no float copy
            x = torch.bmm(x, w) if b is None else torch.baddbmm(b.unsqueeze(1), x, w)
            if depth < last:
                x = torch.relu(x)
        return x

    @torch.no_grad()
    def topk_masks(self, depth: int) -> Tensor:
        """Layer ``depth``'s DNW masks ``(K, in, out)``: each run's top-k |w|, ties to the lower flat
        index of the ``(out, in)`` weight, as :func:`pruners.dnw.topk_mask` decides alone
        (:class:`pruners.dnw.BandedTopK`: exact, from the last step's k-th value)."""
        return self.selectors[depth](self.weights[depth].abs(), transposed=True)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradients of pruned entries (between ``backward()`` and the optimizer step)."""
        if self.topk is not None:
            return                                  # DNW: the gradient reaches every entry
        for w, m in zip(self.weights, self.masks):
            if w.grad is not None:
                w.grad.mul_(m)

    @torch.no_grad()
    def write_back(self, models: Sequence[nn.Module], pruned_scale: float = 1.0) -> None:
        """Copy the trained kept weights and the biases into ``models``.

        Pruned entries of the raw weights get no gradient, so training alone changes them only
        through weight decay, which is linear in the weight: ``pruned_scale`` is the factor the
        optimizer's decay applied to a weight with zero gradient (:class:`_DecayTracker`); 1
        without weight decay.  No forward pass sees these entries, but stored runs keep them
        (Gem-Miner's flagged-but-inactive weights).  Writing back twice writes the same."""
        for k, model in enumerate(models):
            for depth, layer in enumerate(model.layers):
                kept = self.masks[depth][k].transpose(0, 1).bool()
                raw_weight(layer).copy_(torch.where(kept, self.weights[depth][k].transpose(0, 1),
                                                    self.initial[k][depth] * pruned_scale))
                if self.biases[depth] is not None:
                    layer.bias.copy_(self.biases[depth][k])


class _DecayTracker:
    """A one-element parameter in the optimizer whose gradient is always zero: it follows what
    weight decay alone (with momentum, Nesterov and the schedule) does to a weight, from 1.
    Float64: each step moves it by ~lr·wd, which float32 near 1 would round the same way every
    step (a systematic error of ~1 % of the decay)."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.value = torch.ones(1, dtype=torch.float64, device=device, requires_grad=True)
        self._zero = torch.zeros_like(self.value)      # SGD reads the gradient, never writes it

    def before_step(self) -> None:
        self.value.grad = self._zero

    def scale(self) -> float:
        return float(self.value.detach())


def stackable(models: Sequence[nn.Module], cfg: TrainConfig) -> bool:
    """Whether :func:`train_batched` can train ``models`` together under ``cfg``: FC models of
    one architecture, fp32, no label smoothing."""
    from models.fc import FC
    if not models or not all(isinstance(m, FC) for m in models) or cfg.label_smoothing:
        return False
    device = pick_device(cfg.device)
    if use_bf16(models[0], cfg, device):
        return False
    return len({_signature(m) for m in models}) == 1


def _signature(model: nn.Module) -> tuple:
    """What models trained in one stack share: each layer's weight shape and whether it has a bias."""
    return tuple((tuple(layer.weight.shape), layer.bias is not None) for layer in model.layers)


def stacked_batches(data: Dataset, batch_size: int, generators: Sequence[torch.Generator],
                    device: torch.device | str = "cpu") -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of K runs' training batches, stacked: ``(K, B, features)`` and ``(K, B)``.

    Run k's batches are exactly those of ``batches(..., shuffle=True, generator=generators[k],
    train_augment=True)`` (the same permutation draw, the same normalisation), gathered for all
    runs with one index and one normalisation per step.  A dataset with augmentation draws
    per image from each run's generator, so it goes through :func:`batches` run by run.
    """
    if data.info.augment:
        streams = [batches(data.train_x, data.train_y, batch_size, data.info, shuffle=True, generator=g,
                           train_augment=True, device=device) for g in generators]
        for group in zip(*streams):
            yield torch.stack([x.flatten(1) for x, _ in group]), torch.stack([y for _, y in group])
        return
    n = len(data.train_y)
    orders = torch.stack([torch.randperm(n, generator=g) for g in generators])
    for start in range(0, n, batch_size):
        idx = orders[:, start:start + batch_size]
        xb = normalize(data.train_x.index_select(0, idx.reshape(-1)).to(device, non_blocking=True), data.info)
        yield xb.view(*idx.shape, -1), data.train_y[idx].to(device, non_blocking=True)


@torch.no_grad()
def evaluate_stacked(stack: StackedFC, data: Dataset, batch_size: int = 1000,
                     device: torch.device | str = "cpu") -> list[dict[str, float]]:
    """:func:`utils.engine.train.evaluate` for every stacked run at once, on the test set."""
    k = stack.weights[0].shape[0]
    loss_sum = torch.zeros(k, dtype=torch.float64)
    top1 = torch.zeros(k, dtype=torch.long)
    top5 = torch.zeros(k, dtype=torch.long)
    for xb, yb in batches(data.test_x, data.test_y, batch_size, data.info, device=device):
        logits = stack.forward(xb.flatten(1).expand(k, -1, -1)).float()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.repeat(k), reduction="none")
        loss_sum += loss.view(k, -1).sum(1).double().cpu()
        top = logits.topk(5, dim=2).indices
        top1 += (top[..., 0] == yb).sum(1).cpu()
        top5 += (top == yb[None, :, None]).any(dim=2).sum(1).cpu()
    n = len(data.test_y)
    return [{"loss": float(loss_sum[i]) / n, "top1": 100.0 * int(top1[i]) / n, "top5": 100.0 * int(top5[i]) / n}
            for i in range(k)]


def train_batched(models: Sequence[nn.Module], data: Dataset, cfg: TrainConfig, *, seeds: Sequence[int],
                  phase: str = "train", progress: bool = True, desc: str | None = None,
                  epoch_offset: int = 0, train_biases: bool = True,
                  columns: Sequence[Callable[[nn.Module], dict]] | None = None,
                  topk: Sequence[Sequence[int]] | None = None) -> list[pd.DataFrame]:
    """Train FC ``models`` in place, each as :func:`utils.engine.train.train` would with its seed, in
    one batched loop. Returns one history per model (same columns; ``seconds`` is the group's
    epoch time divided by K, the machine time each run cost).

    Args:
        models: K :class:`models.fc.FC` of one architecture, masks installed.
        data: in-memory dataset (shared; each run draws its own batch order).
        cfg: hyperparameters shared by the group (same schedule, same batch size).
        seeds: the runs' seeds, one per model.
        epoch_offset: first epoch number (to continue a history), as ``train``'s.
        train_biases: False trains the weights only (``train(params=weights)``).
        columns: per model, extra history columns from the model after each evaluation
            (``train``'s ``Hooks.columns``; the model holds the current weights when called).
        topk: DNW training (see :class:`StackedFC`): per model, per layer, the weights kept.
    """
    if len(models) != len(seeds) or not models:
        raise UserError("train_batched needs one seed per model")
    if columns is not None and len(columns) != len(models):
        raise UserError("train_batched needs one columns hook per model")
    device = pick_device(cfg.device)
    if cfg.label_smoothing or use_bf16(models[0], cfg, device):
        # not needed by any FC profile; kept out rather than half-supported
        raise UserError("batched training supports fp32 without label smoothing")
    torch.set_num_threads(available_cores())
    for model in models:
        model.to(device)
    stack = StackedFC(models, train_biases=train_biases, topk=topk)
    decay = _DecayTracker(device) if cfg.weight_decay else None
    optimizer = make_optimizer(stack.parameters() + ([decay.value] if decay else []), cfg)
    steps_per_epoch = math.ceil(len(data.train_y) / cfg.batch_size)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch) if cfg.schedule != "constant" else None
    per_step = cfg.schedule in PER_STEP_SCHEDULES
    generators = [generator(seed, "data") for seed in seeds]
    densities = [model_density(m) for m in models]
    rows: list[list[dict]] = [[] for _ in models]
    k = len(models)

    def log(epoch: int, train_losses: Sequence[float], seconds: float) -> None:
        if columns is not None:
            stack.write_back(models, decay.scale() if decay else 1.0)
        for i, test in enumerate(evaluate_stacked(stack, data, cfg.eval_batch_size, device)):
            row = history_row(epoch_offset + epoch, phase, train_losses[i], test, densities[i], seconds / k)
            if columns is not None:
                row.update(columns[i](models[i]))
            rows[i].append(row)

    log(0, [math.nan] * k, 0.0)
    bar = tqdm(range(cfg.epochs), desc=desc or f"{phase} ×{k}", disable=not progress, leave=False)
    for epoch in bar:
        start = time.perf_counter()
        loss_sum = torch.zeros(k, device=device)
        seen = 0
        for xb, yb in stacked_batches(data, cfg.batch_size, generators, device):
            logits = stack.forward(xb)
            losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1),
                                     reduction="none").view(k, -1).mean(1)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            stack.mask_gradients()
            if decay:
                decay.before_step()
            optimizer.step()
            if scheduler and per_step:
                scheduler.step()
            loss_sum += losses.detach() * yb.shape[1]
            seen += yb.shape[1]
        if scheduler and not per_step:
            scheduler.step()
        train_losses = (loss_sum / max(seen, 1)).tolist()
        log(epoch + 1, train_losses, time.perf_counter() - start)
        bar.set_postfix(loss=f"{sum(train_losses) / k:.3f}")
    stack.write_back(models, decay.scale() if decay else 1.0)
    return [pd.DataFrame(r) for r in rows]
