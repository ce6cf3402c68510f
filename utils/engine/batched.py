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
top-k per layer in every forward), DEEPR runs (``rewire``: W = s·relu(θ), each run rewired as
its own DEEPR by :class:`pruners.deepr.StackedDEEPR`), and Gem-Miner runs (``scores``: the
mining, each run with its own validation split; then all their finetunes, ``columns``).

Example::

    histories = train_batched([model_a, model_b], data, cfg, seeds=[21, 42])
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.masks import density as model_density
from models.masks import mask_of, raw_weight
from pruners.dnw import BandedTopK, ChooseTopEdges
from utils.engine.data import Dataset, batches, normalize
from utils.engine.seeding import generator
from utils.engine.train import (
    EVAL_BATCH,
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
from utils.progress import tqdm


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
        signs: DEEPR only, per layer the ``(K, in, out)`` ±1 signs; else None.
        scores, flags: Gem-Miner mining only, per layer the ``(K, in, out)`` trained scores and
            float flags; else None.
    """

    def __init__(self, models: Sequence[nn.Module], train_biases: bool = True,
                 topk: Sequence[Sequence[int]] | None = None, signs: Sequence[Sequence[Tensor]] | None = None,
                 scores: bool = False):
        """``topk``: per model, per layer, the number of weights DNW keeps; then the stack holds the
        raw weights and every forward keeps each run's top-k |w| per layer, the gradient passing
        straight through to every entry (:class:`pruners.dnw.ChooseTopEdges`).
        ``signs``: per model, per layer, DEEPR's ±1 signs ``(out, in)``; then the stack holds θ
        (the models' raw weights) and the forward uses W = s·relu(θ), as
        :class:`pruners.deepr_compat.RewireableWeight`.
        ``scores``: Gem-Miner's mining; the models carry a :class:`pruners.gem_miner.GemMinerMask`
        per layer, the stack trains their scores s (``(K, in, out)``) through the fixed weights,
        W·(STE(1[s > 0.5])·f), as the mask's forward; :meth:`write_back` returns scores and flags,
        :meth:`read_flags` takes the flags back after a prune."""
        if (topk is not None) + (signs is not None) + bool(scores) > 1:
            raise UserError("a stack is one of DNW (topk), DEEPR (signs) or Gem-Miner mining (scores)")
        self.topk = [list(ks) for ks in topk] if topk is not None else None
        self.signs = ([torch.stack([run[depth] for run in signs]).transpose(1, 2).contiguous()
                       for depth in range(len(signs[0]))] if signs is not None else None)
        self.masked = topk is None and signs is None and not scores
        self.scores = self.flags = None
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
            if self.masked:
                mask = torch.stack([mask_of(m) for m in group]).transpose(1, 2).to(raw.dtype).contiguous()
            else:
                mask = torch.ones_like(raw)          # every raw entry trains (DNW, DEEPR: their own rule)
            self.masks.append(mask)
            self.weights.append((raw * mask).contiguous().requires_grad_(not scores))
            has_bias = group[0].bias is not None
            self.biases.append(torch.stack([m.bias.detach() for m in group]).clone().requires_grad_(train_biases)
                               if has_bias else None)
        if scores:
            gems = [[_gem_mask(layer) for layer in ls] for ls in layers]
            self.scores = [torch.stack([run[depth].scores.detach() for run in gems]).transpose(1, 2)
                           .contiguous().requires_grad_() for depth in range(len(layers[0]))]
            self.flags = [None] * len(layers[0])
            self.read_flags(models)

    def parameters(self) -> list[Tensor]:
        """The trained tensors: the weights (Gem-Miner mining: the scores), and the biases unless
        built with ``train_biases=False``."""
        trained = self.scores if self.scores is not None else self.weights
        return trained + [b for b in self.biases if b is not None and b.requires_grad]

    @torch.no_grad()
    def read_flags(self, models: Sequence[nn.Module]) -> None:
        """Gem-Miner mining: take the models' flags (after a prune on the models) into the stack."""
        for depth in range(len(self.weights)):
            self.flags[depth] = torch.stack([_gem_mask(m.layers[depth]).flag for m in models]).transpose(1, 2) \
                .to(self.weights[depth].dtype).contiguous()

    def forward(self, x: Tensor) -> Tensor:
        """``(K, B, 784)`` → logits ``(K, B, classes)``: ReLU between layers, as ``FC.forward``."""
        last = len(self.weights) - 1
        for depth, (w, b) in enumerate(zip(self.weights, self.biases)):
            if self.topk is not None:
                w = ChooseTopEdges.apply(w, self.topk_masks(depth))     # bool: no float copy
            elif self.signs is not None:
                w = torch.relu(w) * self.signs[depth]
            elif self.scores is not None:        # GemMinerMask.forward: STE(1[s > 0.5]) · f
                s = self.scores[depth]
                w = w * (((s > 0.5).to(s.dtype) + (s - s.detach())) * self.flags[depth])
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
        if not self.masked:
            return                 # DNW: the gradient reaches every entry; DEEPR: relu's own zeros
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
                if self.scores is not None:
                    gem = _gem_mask(layer)
                    gem.scores.copy_(self.scores[depth][k].transpose(0, 1))
                    gem.flag.copy_(self.flags[depth][k].transpose(0, 1).bool())


def _gem_mask(layer: nn.Module) -> nn.Module:
    """A layer's Gem-Miner parametrization (:class:`pruners.gem_miner.GemMinerMask`)."""
    return layer.parametrizations.weight[-1]


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


def _stacked_deepr(stack: StackedFC, rewire: Sequence[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The DEEPR optimizer of a stack: θ rewired per run, biases by plain SGD (as ``DeepRMethod.run``)."""
    from pruners.deepr import StackedDEEPR
    options = rewire[0]["options"]
    if any(r["options"] != options for r in rewire):
        raise UserError("DEEPR runs trained together must share l1, temp, reset_val and scope")
    groups = [{"params": stack.weights}]
    biases = [b for b in stack.biases if b is not None and b.requires_grad]
    if biases:
        groups.append({"params": biases, "rewire": False})
    return StackedDEEPR(groups, [r["budgets"] for r in rewire], [r["generator"] for r in rewire], lr=cfg.lr,
                        views=lambda t: t.transpose(1, 2), **options)


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


def stacked_batches(data: Dataset | Sequence[Dataset], batch_size: int, generators: Sequence[torch.Generator],
                    device: torch.device | str = "cpu", features: Sequence[Tensor] | None = None
                    ) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of K runs' training batches, stacked: ``(K, B, features)`` and ``(K, B)``.

    Run k's batches are exactly those of ``batches(..., shuffle=True, generator=generators[k],
    train_augment=True)`` (the same permutation draw, the same normalisation).  ``data`` may give
    each run its own training set (e.g. its own validation split, same size).  ``features``: per
    run its training images already normalised and flattened (:func:`normalized_features`), so
    a step only gathers; without them each step normalises its gathered images (the same values:
    the normalisation is element-wise).  A dataset with augmentation draws per image from each
    run's generator, so it goes through :func:`batches` run by run.
    """
    datasets = [data] * len(generators) if isinstance(data, Dataset) else list(data)
    if len({len(d.train_y) for d in datasets}) != 1:
        raise UserError("runs trained together need training sets of one size")
    info = datasets[0].info
    if info.augment:
        if len({id(d) for d in datasets}) != 1:
            raise UserError("per-run training sets are supported without augmentation only")
        streams = [batches(d.train_x, d.train_y, batch_size, info, shuffle=True, generator=g,
                           train_augment=True, device=device) for d, g in zip(datasets, generators)]
        for group in zip(*streams):
            yield torch.stack([x.flatten(1) for x, _ in group]), torch.stack([y for _, y in group])
        return
    shared = len({id(d) for d in datasets}) == 1
    n = len(datasets[0].train_y)
    orders = torch.stack([torch.randperm(n, generator=g) for g in generators])
    for start in range(0, n, batch_size):
        idx = orders[:, start:start + batch_size]
        if features is not None and shared:
            xb = features[0].index_select(0, idx.reshape(-1)).to(device, non_blocking=True)
        elif features is not None:
            xb = torch.cat([f.index_select(0, i) for f, i in zip(features, idx)]).to(device, non_blocking=True)
        elif shared:
            xb = normalize(datasets[0].train_x.index_select(0, idx.reshape(-1)).to(device, non_blocking=True), info)
        else:
            raw = torch.cat([d.train_x.index_select(0, i) for d, i in zip(datasets, idx)])
            xb = normalize(raw.to(device, non_blocking=True), info)
        yb = (datasets[0].train_y[idx] if shared
              else torch.stack([d.train_y[i] for d, i in zip(datasets, idx)]))
        yield xb.view(*idx.shape, -1), yb.to(device, non_blocking=True)


def normalized_features(datasets: Sequence[Dataset]) -> list[Tensor] | None:
    """Per run its training images normalised and flattened, ``(N, features)`` float32, one tensor
    per distinct dataset (shared by the runs that train on it); None for augmented data.  Done
    once per training instead of once per step for every run's batch (MNIST: 188 MB each)."""
    if datasets[0].info.augment:
        return None
    cache: dict[int, Tensor] = {}
    for d in datasets:
        if id(d) not in cache:
            cache[id(d)] = normalize(d.train_x, d.info).flatten(1)
    return [cache[id(d)] for d in datasets]


@torch.no_grad()
def evaluate_stacked(stack: StackedFC, data: Dataset, batch_size: int | None = None,
                     device: torch.device | str = "cpu") -> list[dict[str, float]]:
    """:func:`utils.engine.train.evaluate` for every stacked run at once, on the test set
    (``batch_size`` ``None``: :data:`~utils.engine.train.EVAL_BATCH`, the FC nets' fastest)."""
    batch_size = EVAL_BATCH if batch_size is None else batch_size
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


@dataclass
class StackHooks:
    """What a method adds to :func:`train_batched`'s loop (the stacked form of ``train``'s
    :class:`~utils.engine.train.Hooks`), all optional:

    * ``loss(stack) -> (K,)``: per-run loss terms added to the runs' losses (each run's gradient
      stays its own);
    * ``after_step(stack)``: after every optimizer step;
    * ``after_epoch(epoch, stack) -> list[dict]``: per-run history entries, before the epoch's row
      (``epoch`` 0-based, as ``train``'s ``Hooks.after_epoch``);
    * ``after_columns(stack, models)``: after the ``columns`` hooks of a row ran on the
      written-back models (e.g. take back the flags a prune changed there).
    """
    loss: Callable[[StackedFC], Tensor] | None = None
    after_step: Callable[[StackedFC], None] | None = None
    after_epoch: Callable[[int, StackedFC], list[dict]] | None = None
    after_columns: Callable[[StackedFC, Sequence[nn.Module]], None] | None = None


def train_batched(models: Sequence[nn.Module], data: Dataset | Sequence[Dataset], cfg: TrainConfig, *,
                  seeds: Sequence[int], phase: str = "train", progress: bool = True, desc: str | None = None,
                  epoch_offset: int = 0, log_initial: bool = True, train_biases: bool = True,
                  columns: Sequence[Callable[[nn.Module], dict]] | None = None,
                  topk: Sequence[Sequence[int]] | None = None,
                  rewire: Sequence[dict] | None = None, scores: bool = False,
                  hooks: StackHooks | None = None) -> list[pd.DataFrame]:
    """Train FC ``models`` in place, each as :func:`utils.engine.train.train` would with its seed, in
    one batched loop. Returns one history per model (same columns; ``seconds`` is the group's
    epoch time divided by K, the machine time each run cost).

    Args:
        models: K :class:`models.fc.FC` of one architecture, masks installed.
        data: in-memory dataset (shared; each run draws its own batch order), or one per run
            (each run's own training set, one test set).
        cfg: hyperparameters shared by the group (same schedule, same batch size).
        seeds: the runs' seeds, one per model.
        epoch_offset: first epoch number (to continue a history), as ``train``'s.
        log_initial: add row 0, the evaluation before training, as ``train``'s.
        train_biases: False trains the weights only (``train(params=weights)``).
        columns: per model, extra history columns from the model after each evaluation
            (``train``'s ``Hooks.columns``; the model holds the current weights when called).
        topk: DNW training (see :class:`StackedFC`): per model, per layer, the weights kept.
        rewire: DEEPR training: per model its ``DeepRMethod.start_batched`` entry ``rewire``
            (``signs``, ``budgets``, ``generator``, and ``options`` shared by the group); the
            optimizer is then :class:`pruners.deepr.StackedDEEPR` at ``cfg.lr``.
        scores: Gem-Miner mining (see :class:`StackedFC`): train the scores, not the weights.
        hooks: the method's additions to the loop (:class:`StackHooks`).
    """
    if len(models) != len(seeds) or not models:
        raise UserError("train_batched needs one seed per model")
    if columns is not None and len(columns) != len(models):
        raise UserError("train_batched needs one columns hook per model")
    datasets = [data] * len(models) if isinstance(data, Dataset) else list(data)
    if len(datasets) != len(models) or len({id(d.test_x) for d in datasets}) != 1:
        raise UserError("train_batched needs one dataset, or one per model sharing one test set")
    device = pick_device(cfg.device)
    if cfg.label_smoothing or use_bf16(models[0], cfg, device):
        # not needed by any FC profile; kept out rather than half-supported
        raise UserError("batched training supports fp32 without label smoothing")
    hooks = hooks or StackHooks()
    torch.set_num_threads(available_cores())
    for model in models:
        model.to(device)
    stack = StackedFC(models, train_biases=train_biases, topk=topk, scores=scores,
                      signs=[r["signs"] for r in rewire] if rewire is not None else None)
    decay = _DecayTracker(device) if cfg.weight_decay and stack.masked else None
    if rewire is not None:
        optimizer = _stacked_deepr(stack, rewire, cfg)
    else:
        optimizer = make_optimizer(stack.parameters() + ([decay.value] if decay else []), cfg)
    steps_per_epoch = math.ceil(len(datasets[0].train_y) / cfg.batch_size)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch) if cfg.schedule != "constant" else None
    per_step = cfg.schedule in PER_STEP_SCHEDULES
    generators = [generator(seed, "data") for seed in seeds]
    features = normalized_features(datasets)
    densities = [model_density(m) for m in models]
    rows: list[list[dict]] = [[] for _ in models]
    k = len(models)

    def log(epoch: int, train_losses: Sequence[float], seconds: float, extra: list[dict] | None = None) -> None:
        if columns is not None:
            stack.write_back(models, decay.scale() if decay else 1.0)
        tests = evaluate_stacked(stack, datasets[0], cfg.eval_batch_size, device)
        for i, test in enumerate(tests):
            row = history_row(epoch_offset + epoch, phase, train_losses[i], test, densities[i], seconds / k)
            if columns is not None:
                row.update(columns[i](models[i]))
            row.update(extra[i] if extra else {})
            rows[i].append(row)
        if columns is not None and hooks.after_columns:
            hooks.after_columns(stack, models)

    if log_initial:
        log(0, [math.nan] * k, 0.0)
    bar = tqdm(range(cfg.epochs), desc=desc or f"{phase} ×{k}", disable=not progress, leave=False)
    for epoch in bar:
        start = time.perf_counter()
        loss_sum = torch.zeros(k, device=device)
        seen = 0
        for xb, yb in stacked_batches(datasets, cfg.batch_size, generators, device, features):
            logits = stack.forward(xb)
            losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1),
                                     reduction="none").view(k, -1).mean(1)
            total = losses + hooks.loss(stack) if hooks.loss else losses
            optimizer.zero_grad(set_to_none=True)
            total.sum().backward()
            stack.mask_gradients()
            if decay:
                decay.before_step()
            optimizer.step()
            if scheduler and per_step:
                scheduler.step()
            if hooks.after_step:
                hooks.after_step(stack)
            loss_sum += losses.detach() * yb.shape[1]
            seen += yb.shape[1]
        if scheduler and not per_step:
            scheduler.step()
        extra = hooks.after_epoch(epoch, stack) if hooks.after_epoch else None
        train_losses = (loss_sum / max(seen, 1)).tolist()
        log(epoch + 1, train_losses, time.perf_counter() - start, extra)
        bar.set_postfix(loss=f"{sum(train_losses) / k:.3f}")
    stack.write_back(models, decay.scale() if decay else 1.0)
    return [pd.DataFrame(r) for r in rows]
