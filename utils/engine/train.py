"""The training engine: SGD with schedules, channels_last (+ bf16 autocast where the CPU has
native bf16) for conv nets on CPU, per-epoch history, tqdm progress.  Runs unchanged on CUDA.

Hooks let pruners that train (Gem-Miner, DEEPR, DNW) reuse the loop: a custom
optimizer, a subset of parameters, an extra loss term, and callbacks after each
step and each epoch.
"""
from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.masks import density as model_density
from utils.engine.data import Dataset, batches
from utils.engine.seeding import generator
from utils.errors import UserError
from utils.progress import tqdm

SCHEDULES = ("constant", "multistep", "cosine", "linear")
#: Schedules that set the learning rate every step rather than every epoch.
PER_STEP_SCHEDULES = ("linear",)


@dataclass
class TrainConfig:
    """Hyperparameters of one training phase.

    Attributes:
        epochs, batch_size: as usual; the thesis uses batch 64.
        lr, momentum, nesterov, weight_decay: SGD settings.
        schedule: ``constant``, ``multistep`` (×``gamma`` at each epoch in ``milestones``),
            ``cosine`` (T_max = epochs), all per epoch, or ``linear`` (per step: a linear
            warm-up from 0 to ``lr`` over ``warmup_epochs``, then a linear decay to 0 at the
            last step).
        warmup_epochs: length of the ``linear`` schedule's warm-up, in epochs (may be fractional).
        label_smoothing: cross-entropy label smoothing of the training loss (0: none).
        bf16: autocast to bfloat16 (fp32 master weights). ``None``: on for conv nets on a CPU
            with native bf16 kernels (:func:`cpu_has_native_bf16`), off otherwise.
        channels_last: NHWC memory format for conv nets. ``None``: on for conv nets on CPU,
            elsewhere it follows ``bf16``.
        eval_batch_size: images per forward pass of the evaluation (no effect on results, so
            recipe digests and checkpoint keys leave it out: :meth:`result_dict`). ``None``:
            :func:`eval_batch_size` picks by model and device.
        device: ``"cpu"``, ``"cuda"``, ... ; ``None`` picks CUDA when available.
    """
    epochs: int = 25
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    bf16: bool | None = None
    channels_last: bool | None = None
    eval_batch_size: int | None = None
    device: str | None = None

    #: Fields that change how fast a phase runs but not what it computes.
    NO_EFFECT_ON_RESULTS: ClassVar[tuple[str, ...]] = ("eval_batch_size",)

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        self.milestones = tuple(self.milestones)
        if self.warmup_epochs and self.schedule != "linear":
            raise UserError(f"warmup_epochs needs schedule 'linear', not {self.schedule!r}")
        if not 0 <= self.warmup_epochs < max(self.epochs, 1):
            raise UserError(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs}")

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a config mapping; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise UserError(f"unknown training option(s) {sorted(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    def result_dict(self) -> dict:
        """:meth:`to_dict` without :attr:`NO_EFFECT_ON_RESULTS`: what a recipe digest and a
        checkpoint key cover, so e.g. a larger evaluation batch on a GPU is the same recipe."""
        return {k: v for k, v in self.to_dict().items() if k not in self.NO_EFFECT_ON_RESULTS}


def available_cores() -> int:
    """CPU cores this process may use (``$SPARSE_NUM_THREADS`` overrides, e.g. in parallel sweeps)."""
    if os.environ.get("SPARSE_NUM_THREADS"):
        return int(os.environ["SPARSE_NUM_THREADS"])
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextmanager
def torch_threads(threads: int):
    """Run the block with ``threads`` torch threads (also for :func:`train`, via
    ``$SPARSE_NUM_THREADS``); the previous settings are restored afterwards."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    previous_env, previous = os.environ.get("SPARSE_NUM_THREADS"), torch.get_num_threads()
    os.environ["SPARSE_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        if previous_env is None:
            os.environ.pop("SPARSE_NUM_THREADS", None)
        else:
            os.environ["SPARSE_NUM_THREADS"] = previous_env
        torch.set_num_threads(previous)


def pick_device(device: str | None = None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def cpu_description(cpuinfo: str, capability: str) -> str:
    r"""The CPU named by ``cpuinfo`` (the text of Linux's ``/proc/cpuinfo``), with torch's vector ISA
    ``capability`` and the CPU flag of its bf16 kernels (AMX before AVX-512 bf16, as oneDNN picks):
    bf16 training can round differently on the two, so a run records which it had.

    >>> cpu_description("model name\t: AMD EPYC\nflags\t\t: avx512f avx512_bf16\n", "AVX512")
    'AMD EPYC (AVX512, avx512_bf16)'
    """
    entries = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    entries = {key.strip(): value.strip() for key, value in entries.items()}
    flags = set(entries.get("flags", "").split())
    kernels = next((flag for flag in ("amx_bf16", "avx512_bf16") if flag in flags), None)
    name = entries.get("model name") or platform.processor() or platform.machine()
    return f"{name} ({capability}{', ' + kernels if kernels else ''})"


def device_name(device: torch.device) -> str:
    """What computes on ``device``: the GPU's name, or :func:`cpu_description` of this machine's CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _this_cpu()


@lru_cache(maxsize=1)
def _this_cpu() -> str:
    """This machine's :func:`cpu_description`, read once per process (every checkpointed call asks)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:                                  # not Linux: the name platform gives
        cpuinfo = ""
    return cpu_description(cpuinfo, torch.backends.cpu.get_cpu_capability())


def trained_on(earlier: list, here: str, epochs: int) -> list[list]:
    """The ``[device name, epochs]`` segments of a call's training: ``earlier`` ones (restored from a
    checkpoint) then ``epochs`` trained ``here``, joined when ``here`` trained the last segment too.

    >>> trained_on([["A", 18]], "B", 42)
    [['A', 18], ['B', 42]]
    >>> trained_on([["A", 18]], "A", 2)
    [['A', 20]]
    """
    segments = [list(segment) for segment in earlier]
    if segments and segments[-1][0] == here:
        segments[-1][1] += epochs
    elif epochs:
        segments.append([here, epochs])
    return segments


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


#: Evaluation batch sizes of :func:`eval_batch_size`, measured with benchmarks/bench_evaluation.py
#: (one thread, AVX2 EPYC, idle): a ResNet-20 evaluates 2.2x faster per image at 64 than at 1000
#: (its activations of 1000 images overflow the caches); the FC net is overhead-bound, 2.1x faster
#: at 1000 than at 64.
EVAL_BATCH_CONV_CPU = 64
EVAL_BATCH = 1000


def eval_batch_size(model: nn.Module, device: torch.device | str = "cpu",
                    requested: int | None = None) -> int:
    """``requested``, else the evaluation batch size that is fastest for ``model`` on ``device``:
    :data:`EVAL_BATCH_CONV_CPU` for conv nets on CPU, :data:`EVAL_BATCH` otherwise.

    >>> eval_batch_size(build_model("resnet20")), eval_batch_size(build_model("fc"))
    (64, 1000)
    """
    if requested is not None:
        return requested
    conv_on_cpu = torch.device(device).type == "cpu" and has_conv(model)
    return EVAL_BATCH_CONV_CPU if conv_on_cpu else EVAL_BATCH


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU (AVX512 or AMX).  Without them bf16 autocast
    is emulated: on an AVX2-only EPYC a ResNet-20 step ran 14x slower than fp32 (16 vs 219 img/s,
    one thread)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def use_bf16(model: nn.Module, cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast is the default for conv nets on a CPU with native bf16; FC nets gain
    nothing from it."""
    if cfg.bf16 is not None:
        return cfg.bf16
    return device.type == "cpu" and has_conv(model) and cpu_has_native_bf16()


def use_channels_last(model: nn.Module, cfg: TrainConfig, device: torch.device) -> bool:
    """NHWC is the default for conv nets on CPU, where it is faster in bf16 and in fp32 alike
    (219 vs 173 img/s for a fp32 ResNet-20 step, one AVX2 thread)."""
    if cfg.channels_last is not None:
        return cfg.channels_last
    return has_conv(model) and (device.type == "cpu" or use_bf16(model, cfg, device))


def make_optimizer(params: Iterable[Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (plain, momentum or Nesterov) with weight decay."""
    return torch.optim.SGD(list(params), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


def linear_factor(step: int, total_steps: int, warmup_steps: float) -> float:
    """LR multiplier of the ``linear`` schedule at 0-based ``step`` of ``total_steps``: a ramp
    (step + 1) / warmup_steps during the warm-up, then (total − step) / (total − warm-up), so the
    last step runs at 1 / (total − warm-up) of the peak.

    >>> [round(linear_factor(s, 10, 2), 3) for s in range(10)]
    [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(total_steps - step, 0) / (total_steps - warmup_steps)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int = 1):
    """The LR schedule of ``cfg``: call ``step()`` once per step for the schedules in
    :data:`PER_STEP_SCHEDULES`, once per epoch for the others."""
    if cfg.schedule == "linear":
        total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: linear_factor(step, total, warmup))
    if cfg.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.milestones), cfg.gamma)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def _prepare_input(x: Tensor, channels_last: bool) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.inference_mode()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, data: Dataset, batch_size: int | None = None,
             device: torch.device | str = "cpu", bf16: bool = False,
             channels_last: bool = False) -> dict[str, float]:
    """Mean cross-entropy loss, top-1 and top-5 accuracy (%) of ``model`` on uint8 images ``x``.

    ``batch_size`` ``None``: :func:`eval_batch_size`.  The model is put in eval mode and restored
    to its previous mode afterwards.
    """
    was_training = model.training
    model.eval()
    device = torch.device(device)
    batch_size = eval_batch_size(model, device, batch_size)
    loss_sum, top1, top5 = 0.0, 0, 0
    for xb, yb in batches(x, y, batch_size, data.info, device=device):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(_prepare_input(xb, channels_last)).float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        top = logits.topk(5, dim=1).indices
        top1 += (top[:, 0] == yb).sum().item()
        top5 += (top == yb[:, None]).any(dim=1).sum().item()
    model.train(was_training)
    n = len(y)
    return {"loss": loss_sum / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n}


def history_row(epoch: int, phase: str, train_loss: float, test: dict[str, float], density: float,
                seconds: float) -> dict:
    """One row of a training history (see :func:`train`) from an :func:`evaluate` result."""
    return {"epoch": epoch, "phase": phase, "train_loss": train_loss, "test_loss": test["loss"],
            "top1": test["top1"], "top5": test["top5"], "density": density, "seconds": seconds}


@dataclass
class Hooks:
    """Optional customisation of :func:`train` for pruners that train.

    Attributes:
        loss: extra loss term ``loss(model) -> Tensor`` added to the cross-entropy.
        after_step: called after every optimizer step with the model (e.g. clamp scores).
        after_epoch: called with ``(epoch, model)`` after each epoch, before evaluation;
            may return a dict of extra history columns.
        columns: ``columns(model) -> dict`` of extra history columns for every row.
        state: what the hooks keep between calls, as an object with ``state_dict()`` and
            ``load_state_dict()``, so a killed :func:`train` can resume
            (:mod:`utils.engine.checkpoint`).
        stateless: the hooks keep nothing between calls (they are functions of the model).
            A :func:`train` with hooks resumes only when they give ``state`` or say ``stateless``.
    """
    loss: Callable[[nn.Module], Tensor] | None = None
    after_step: Callable[[nn.Module], None] | None = None
    after_epoch: Callable[[int, nn.Module], dict | None] | None = None
    columns: Callable[[nn.Module], dict] | None = None
    state: object | None = None
    stateless: bool = False

    @property
    def resumable(self) -> bool:
        return self.stateless or self.state is not None


def _checkpoint_slot(model: nn.Module, cfg: TrainConfig, seed: int, phase: str, epoch_offset: int,
                     log_initial: bool, hooks: Hooks, optimizer, *, custom_optimizer: bool):
    """This call's checkpoint file, or None: outside a checkpoint scope, or when the call keeps
    state no checkpoint holds (a caller's optimizer whose state dict leaves some out, e.g. a
    noise generator, unless it says ``resumable``; hooks that neither give their state nor
    declare none)."""
    from utils.engine.checkpoint import current
    scope = current()
    if scope is None:
        return None
    hooked = any(h is not None for h in (hooks.loss, hooks.after_step, hooks.after_epoch, hooks.columns))
    opaque = custom_optimizer and not getattr(optimizer, "resumable", False)
    if opaque or (hooked and not hooks.resumable):
        scope.calls += 1                           # counted either way: call k stays call k on a rerun
        return None
    settings = {"train": cfg.result_dict(), "seed": seed, "phase": phase, "epoch_offset": epoch_offset,
                "log_initial": log_initial}
    # until 2026-12-05 the key held the whole TrainConfig, eval_batch_size (default 1000) included:
    # runs in flight then resume
    size = cfg.eval_batch_size
    earlier = {**settings, "train": {**cfg.to_dict(), "eval_batch_size": 1000 if size is None else size}}
    return scope.slot(phase, settings, model, earlier=[earlier])


def _restore(saved: dict, model: nn.Module, optimizer, scheduler, data_gen: torch.Generator, hooks: Hooks,
             scheduler_steps_per_epoch: int, epochs: int) -> tuple[int, list[dict]]:
    """Put a checkpoint of a call of ``epochs`` epochs back; returns (epochs done, history rows so far)."""
    import warnings
    done = int(saved["epochs_done"])
    model.load_state_dict(saved["model"])
    if scheduler is not None:
        # the schedule is a function of the steps taken: replay them, then the optimizer's own lr
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # "scheduler.step() before optimizer.step()"
            for _ in range(done * scheduler_steps_per_epoch):
                scheduler.step()
    if done < epochs or "optimizer" in saved:       # a finished call's may be left out (see train)
        optimizer.load_state_dict(saved["optimizer"])
    data_gen.set_state(saved["data_gen"])
    torch.set_rng_state(saved["global_rng"])
    if hooks.state is not None:
        hooks.state.load_state_dict(saved["hooks"])
    return done, list(saved["rows"])


def train(model: nn.Module, data: Dataset, cfg: TrainConfig, *, seed: int,
          optimizer: torch.optim.Optimizer | None = None, params: Iterable[Tensor] | None = None,
          hooks: Hooks | None = None, phase: str = "train", epoch_offset: int = 0,
          log_initial: bool = True, progress: bool = True, desc: str | None = None) -> pd.DataFrame:
    """Train ``model`` in place on ``data`` and return its per-epoch history.

    Args:
        model: any module; masked weights stay exactly zero (their gradients are zero).
        data: in-memory dataset; batches are drawn from the ``data`` stream of ``seed``.
        cfg: hyperparameters.
        seed: run seed (fixes the batch order and augmentation).
        optimizer: a ready optimizer (e.g. DEEPR); default SGD over ``params``.
        params: parameters to optimise; default every parameter with ``requires_grad``.
        hooks: extra loss / callbacks, see :class:`Hooks`.
        phase: value of the ``phase`` column.
        epoch_offset: first epoch number (to continue a history).
        log_initial: add row 0, the evaluation before training.

    Inside :func:`utils.engine.checkpoint.resume_from` the state is saved while training, and a
    rerun of the same run continues from it (default optimizer and resumable hooks only).

    Returns:
        DataFrame with one row per epoch: ``epoch, phase, train_loss, test_loss, top1,
        top5, density, seconds`` (+ hook columns).  Accuracies in %, density a fraction.
    """
    hooks = hooks or Hooks()
    device = pick_device(cfg.device)
    torch.set_num_threads(available_cores())
    bf16 = use_bf16(model, cfg, device)
    channels_last = use_channels_last(model, cfg, device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer_given = optimizer is not None
    if optimizer is None:
        optimizer = make_optimizer(params if params is not None else
                                   (p for p in model.parameters() if p.requires_grad), cfg)
    steps_per_epoch = math.ceil(len(data.train_y) / cfg.batch_size)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch) if cfg.schedule != "constant" else None
    per_step = cfg.schedule in PER_STEP_SCHEDULES
    data_gen = generator(seed, "data")
    rows: list[dict] = []
    slot = _checkpoint_slot(model, cfg, seed, phase, epoch_offset, log_initial, hooks, optimizer,
                            custom_optimizer=optimizer_given)
    done, earlier = 0, []
    if slot is not None and (saved := slot.load()) is not None:
        done, rows = _restore(saved, model, optimizer, scheduler, data_gen, hooks,
                              steps_per_epoch if per_step else 1, cfg.epochs)
        # checkpoints written before 2026-12-07 do not say where their epochs trained
        earlier = saved.get("trained_on", [[None, done]] if done else [])
    here = device_name(device) if slot is not None else None

    def log(epoch: int, train_loss: float, seconds: float, extra: dict | None = None) -> None:
        test = evaluate(model, data.test_x, data.test_y, data, cfg.eval_batch_size, device, bf16,
                        channels_last)
        row = history_row(epoch, phase, train_loss, test, model_density(model), seconds)
        if hooks.columns:
            row.update(hooks.columns(model))
        row.update(extra or {})
        rows.append(row)

    if log_initial and not done:
        log(epoch_offset, math.nan, 0.0)
    bar = tqdm(range(done, cfg.epochs), desc=desc or phase, disable=not progress, leave=False,
               initial=done, total=cfg.epochs)
    for epoch in bar:
        start = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        seen = 0
        for xb, yb in batches(data.train_x, data.train_y, cfg.batch_size, data.info, shuffle=True,
                              generator=data_gen, train_augment=True, device=device):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(_prepare_input(xb, channels_last))
            loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
            total = loss + hooks.loss(model) if hooks.loss else loss
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            if scheduler and per_step:
                scheduler.step()
            if hooks.after_step:
                hooks.after_step(model)
            loss_sum += loss.detach() * len(yb)
            seen += len(yb)
        if scheduler and not per_step:
            scheduler.step()
        extra = hooks.after_epoch(epoch, model) if hooks.after_epoch else None
        train_loss = loss_sum.item() / max(seen, 1)
        log(epoch_offset + epoch + 1, train_loss, time.perf_counter() - start, extra)
        bar.set_postfix(loss=f"{train_loss:.3f}", top1=f"{rows[-1]['top1']:.2f}")
        final = epoch + 1 == cfg.epochs
        if slot is not None and slot.due(final):
            # an optimizer made here ends with the call: once the call is finished nothing steps it
            # again, and leaving its state out shrinks the file a finished call keeps while later
            # calls of the run train by a third to a half (Gem-Miner: mining 3.3 -> 2.25 MB,
            # finetune 2.25 -> 1.16 MB); a caller's optimizer stays, the caller may go on with it
            keeps_optimizer = optimizer_given or not final
            slot.save({"epochs_done": epoch + 1, "epochs_total": cfg.epochs, "rows": rows,
                       "model": model.state_dict(),
                       **({"optimizer": optimizer.state_dict()} if keeps_optimizer else {}),
                       "data_gen": data_gen.get_state(),
                       "global_rng": torch.get_rng_state(),
                       "hooks": hooks.state.state_dict() if hooks.state is not None else {},
                       "trained_on": trained_on(earlier, here, epoch + 1 - done)})
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    return pd.DataFrame(rows)
