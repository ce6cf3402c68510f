"""Gem-Miner ``hc_iter`` (Sreenivasan et al. 2022; ``ksreenivasan/pruning_is_enough``), SPEC §8.3.

Each prunable weight gets a frozen signed-constant weight w, a score s ∈ [0, 1] trained
through a straight-through estimator (STE), and a non-trainable flag f.  Every T epochs
the smallest |s| among the flagged weights lose their flag (BottomK), so that after
P = ⌊(E−1)/T⌋ prunes at most ≈d·N flags remain.  Then the scores are rounded, the mask
is frozen, and the weights are finetuned through it.

Two modes decide the final mask from (f, s):

``"thesis"``
    mask = f ∧ (s > 0.5), exactly as upstream and the thesis.  The target is only an
    upper bound: with the thesis's FC settings (λ = 1e-4 plus wd 5e-4 on the scores) the
    scores sink below 0.5 and the effective density ends near 3 % for every target ≥ 5 %.
``"target"`` (default, corrected)
    mask = the round(d·N) highest scores among the flagged weights (exact global count,
    seeded ties; :func:`pruners.base.select_global`).  Mining is *identical* in both modes
    (same seed → same flags and scores); only this rounding step differs.  Because
    scores above 0.5 rank first, the result is the mined effective mask f ∧ (s > 0.5),
    trimmed if it holds more than round(d·N) weights, or completed with the
    highest-scoring flagged-but-inactive weights if it holds fewer.  Flags are never
    revived, so if the BottomK schedule leaves fewer than round(d·N) flags (its ceil
    rounding can remove up to P extra weights, e.g. 5968 flags vs 5970 at FC 5 %) the
    mask is all flags: density is within P/N of the target, far inside 0.5 % of N.

``unflag=True`` sets s ← 1 before rounding (upstream ``unflag_before_finetune``), so the
mask is the flags in either mode.

The stored "rounded scores" are chosen so that mask = flag ∧ rounded score in every
mode: 1[s > 0.5] (thesis), the selection (target), all ones (unflag).
"""
from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from models.masks import density as model_density
from models.masks import prunable_layers, raw_weight, set_masks
from utils.engine.seeding import generator, stream_seed
from utils.errors import UserError

from .base import Method, MethodResult, MethodStyle, check_density, kept_count, register, select_global
from .gem_mining import (  # noqa: F401  (importable from here as before)
    GemMinerMask,
    Mining,
    attach_gem_masks,
    bottom_k_prune,
    count_effective,
    count_flags,
    flag_schedule,
    gem_masks,
    keep_top_flags,
    num_prunes,
    prune_count,
    prune_rate,
    signed_constant_,
)

MODES = ("target", "thesis")
#: FC finetunes trained in one stack at most (the sweep's measured best group size, benchmarks/README.md)
FINETUNE_STACK = 8
SCOPES = ("global", "layer")


# --------------------------------------------------------------------------- the method

@dataclass
class GemMinerOptions:
    """Gem-Miner's options (defaults are the thesis FC values; the ResNet config passes its own).

    Args:
        mining_epochs: E of the mining phase; ``None`` → the training config's epochs.
        period: T, prune after 0-based epochs e with e % T == 0, e ≠ 0.  A fraction T < 1
            prunes every T epochs of training instead, counted in steps (after step
            round(k·T·steps per epoch), k = 1…P): the thesis's schedule (29 prunes over 150
            epochs) compressed in time keeps its 29 prunes at T = 0.5 over 15 epochs.
        lr, momentum, weight_decay, schedule: SGD on the scores (cosine, T_max = E).
        score_l2: λ of the λΣs² loss term.
        batch_size: mining batch size.
        mode: ``"target"`` (exact round(d·N) among the flags) or ``"thesis"`` (f ∧ s > 0.5).
        scope: ``"global"`` (thesis, upstream): BottomK and the target rounding rank all
            layers together.  ``"layer"``: every layer loses the same share of its flags, so
            no layer can collapse; the ResNet-20 ``cpu`` profile needs it (see its config).
        unflag: s ← 1 before rounding, so the mask is the flags.
        sanity_checks: also return the weight-reinit and mask-shuffle finetunes.
        sanity_seeds: only run the sanity finetunes for these seeds (``None``: all).
        val_size: hold-out images for ``val_acc`` (if ``data`` has no validation split yet).
        log_val: log ``val_acc`` every epoch.
        train_biases: also finetune biases (BN β included); off in the thesis, so β stays 0.
    """
    mining_epochs: int | None = None
    period: float = 2
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    score_l2: float = 1e-4
    batch_size: int = 128
    mode: str = "target"
    scope: str = "global"
    unflag: bool = False
    sanity_checks: bool = True
    sanity_seeds: list[int] | None = None
    val_size: int = 5000
    log_val: bool = True
    train_biases: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise UserError(f"unknown Gem-Miner mode {self.mode!r}; choose from {', '.join(MODES)}")
        if self.scope not in SCOPES:
            raise UserError(f"unknown Gem-Miner scope {self.scope!r}; choose from {', '.join(SCOPES)}")
        num_prunes(1, self.period)           # validates the period
        if self.mining_epochs is not None and self.mining_epochs < 1:
            raise UserError(f"Gem-Miner mining_epochs must be ≥ 1, got {self.mining_epochs}")
        # whole periods are ints: run.json records them as configs write them (2, not 2.0)
        self.period = self.period if self.period < 1 else int(self.period)
        self.unflag, self.sanity_checks = bool(self.unflag), bool(self.sanity_checks)
        self.sanity_seeds = None if self.sanity_seeds is None else [int(s) for s in self.sanity_seeds]
        self.val_size, self.log_val, self.train_biases = int(self.val_size), bool(self.log_val), bool(self.train_biases)


@register
class GemMiner(Method):
    """Gem-Miner ``hc_iter``: score mining with iterative BottomK flag pruning, then finetuning.

    Options: :class:`GemMinerOptions`.  The run's ``TrainConfig`` is the finetune config
    (E epochs).  ``run`` returns ``{"gem-miner": …, "gem-miner-reinit": …, "gem-miner-shuffle": …}``.
    Not score-based in the base's sense: the scores are trained, and the flags pruned
    between epochs (:func:`bottom_k_prune`).
    """
    name = "gem-miner"
    Options = GemMinerOptions
    style = MethodStyle("Gem-Miner", "gem", "#009E73", "s")
    variants = {"gem-miner-reinit": MethodStyle("Gem-Miner weight-reinit", "gemR", "#44AA99", "v"),
                "gem-miner-shuffle": MethodStyle("Gem-Miner mask-shuffle", "gemS", "#117733", "D")}
    model_kwargs = {"fc": {"hidden_bias": False, "output_bias": False},
                    "resnet20": {"prune_shortcuts": False, "fc_bias": False}}

    # ---- phases ----------------------------------------------------------------------------

    def prepare(self, model: nn.Module, seed: int) -> None:
        """Signed-constant weights, U(0,1) scores, all flags 1, everything but the scores frozen."""
        signed_constant_(model)
        attach_gem_masks(model, generator(seed, "scores"))
        for p in model.parameters():
            p.requires_grad_(False)
        for p in gem_masks(model).values():
            p.scores.requires_grad_(True)

    def mining_config(self, train_cfg, epochs: int):
        from utils.engine.train import TrainConfig
        o = self.options
        return TrainConfig(epochs=epochs, batch_size=o.batch_size, lr=o.lr, momentum=o.momentum,
                           weight_decay=o.weight_decay, schedule=o.schedule, bf16=train_cfg.bf16,
                           channels_last=train_cfg.channels_last,
                           eval_batch_size=train_cfg.eval_batch_size, device=train_cfg.device)

    def mine(self, model: nn.Module, data, density: float, train_cfg, *, seed: int, epochs: int,
             progress: bool = True, monitor: Callable[[int, nn.Module], None] | None = None
             ) -> tuple[pd.DataFrame, dict]:
        """Train the scores for ``epochs`` epochs with BottomK prunes; returns (history, facts).

        ``monitor(epoch, model)`` is called after each epoch's prune (for tests).
        """
        from utils.engine.train import Hooks, train
        mining = Mining(self, model, data, density, train_cfg, seed=seed, epochs=epochs, monitor=monitor)
        lam = self.options.score_l2
        history = train(model, data, self.mining_config(train_cfg, epochs), seed=seed,
                        params=[p.scores for p in gem_masks(model).values()],
                        hooks=Hooks(loss=mining.reg if lam else None, after_step=mining.after_step,
                                    after_epoch=mining.after_epoch, columns=mining.columns, state=mining),
                        phase="mining", epoch_offset=-1, log_initial=False, progress=progress,
                        desc="gem-miner mining")
        return history, mining.facts()

    def mine_batched(self, models: list[nn.Module], datasets: list, densities: list[float], train_cfg, *,
                     seeds: list[int], epochs: int, progress: bool = True) -> list[tuple[pd.DataFrame, dict]]:
        """:meth:`mine` for K FC runs in one stacked loop (:func:`utils.engine.batched.train_batched`,
        ``scores=True``): each run mines its own scores with its own data, seed, BottomK generator
        and stop rule, as alone (``tests/test_batched.py``). Returns (history, facts) per run."""
        from utils.engine.batched import StackHooks, train_batched
        minings = [Mining(self, m, d, density, train_cfg, seed=seed, epochs=epochs)
                   for m, d, density, seed in zip(models, datasets, densities, seeds)]
        lam = self.options.score_l2

        def reg(stack) -> Tensor:
            # the gradient 2λs is each run's own; the value (summed in another order) is not logged
            return lam * sum((s ** 2).sum((1, 2)) for s in stack.scores)

        @torch.no_grad()
        def after_step(stack) -> None:
            for s in stack.scores:
                s.clamp_(0.0, 1.0)
            for k, mining in enumerate(minings):
                if mining.state["frozen"] is not None:
                    for s, frozen in zip(stack.scores, mining.state["frozen"].values()):
                        s[k].copy_(frozen.transpose(0, 1))
            due = [k for k, mining in enumerate(minings) if mining.count_step()]
            if due:                                   # fractional periods: prune between steps
                stack.write_back(models)
                for k in due:
                    minings[k].prune_now(models[k])
                stack.read_flags(models)

        def after_epoch(epoch: int, stack) -> list[dict]:
            stack.write_back(models)                  # reg_loss from each model, as alone
            return [mining.after_epoch(epoch, m) for mining, m in zip(minings, models)]

        histories = train_batched(models, datasets, self.mining_config(train_cfg, epochs), seeds=seeds,
                                  phase="mining", progress=progress, desc=f"gem-miner mining ×{len(models)}",
                                  epoch_offset=-1, log_initial=False, train_biases=False, scores=True,
                                  columns=[mining.columns for mining in minings],
                                  hooks=StackHooks(loss=reg if lam else None, after_step=after_step,
                                                   after_epoch=after_epoch,
                                                   after_columns=lambda stack, ms: stack.read_flags(ms)))
        return [(history, mining.facts()) for history, mining in zip(histories, minings)]

    @torch.no_grad()
    def round_masks(self, model: nn.Module, density: float, seed: int
                    ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """Final (mask, flags, rounded scores) per layer; mask = flags ∧ rounded scores."""
        o = self.options
        masks_ = gem_masks(model)
        flags = {n: p.flag.detach().clone() for n, p in masks_.items()}
        if o.unflag:
            rounded = {n: torch.ones_like(f) for n, f in flags.items()}
        elif o.mode == "thesis":
            rounded = {n: p.scores.detach() > 0.5 for n, p in masks_.items()}
        else:
            total = sum(f.numel() for f in flags.values())
            rounded = select_global({n: p.scores.detach() for n, p in masks_.items()},
                                    kept_count(density, total), flags, generator(seed, "round"),
                                    scope=o.scope)
        mask = {n: flags[n] & rounded[n].to(flags[n].device) for n in flags}
        return mask, flags, rounded

    def finetune(self, model: nn.Module, data, train_cfg, *, seed: int, epoch_offset: int,
                 flag_density: float, progress: bool = True, desc: str = "gem-miner finetune"
                 ) -> pd.DataFrame:
        """Train ``*.weight`` (BN γ included; biases only with ``train_biases``) through the fixed masks.

        The first row (phase ``"rounded"``, epoch ``epoch_offset``) is the post-rounding evaluation.
        """
        from utils.engine.train import Hooks, train
        params = self.finetune_parameters(model)
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        columns = self._columns(data, train_cfg, lambda m: flag_density)
        history = train(model, data, train_cfg, seed=seed, params=params,
                        hooks=Hooks(columns=columns, stateless=True), phase="finetune", epoch_offset=epoch_offset,
                        log_initial=True, progress=progress, desc=desc)
        history.loc[0, "phase"] = "rounded"
        history["reg_loss"] = 0.0
        return history

    def finetune_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        out = []
        for name, p in model.named_parameters():
            if name.endswith(".weight") or name.endswith("parametrizations.weight.original"):
                out.append(p)
            elif self.options.train_biases and name.endswith(".bias"):
                out.append(p)
        return out

    def _columns(self, data, train_cfg, flag_density: Callable[[nn.Module], float]):
        from utils.engine.train import evaluate, pick_device, use_bf16
        has_val = self.options.log_val and getattr(data, "val_x", None) is not None and len(data.val_y) > 0

        def columns(m: nn.Module) -> dict:
            row = {"density_effective": model_density(m), "density_flag": flag_density(m)}
            if has_val:
                device = pick_device(train_cfg.device)
                row["val_acc"] = evaluate(m, data.val_x, data.val_y, data, train_cfg.eval_batch_size, device,
                                          use_bf16(m, train_cfg, device))["top1"]
            else:
                row["val_acc"] = math.nan
            return row
        return columns

    # ---- the whole run ---------------------------------------------------------------------

    def run(self, model: nn.Module, data, density: float, train_cfg, *, seed: int,
            progress: bool = True) -> dict[str, MethodResult]:
        density = check_density(density)
        data, val_seed = self._split(data, seed)
        mining_epochs = self._mining_epochs(train_cfg)
        self.prepare(model, seed)
        mining_history, facts = self.mine(model, data, density, train_cfg, seed=seed,
                                          epochs=mining_epochs, progress=progress)
        mined = self._round(model, density, seed)
        nets = list(mined["nets"].values())
        histories, batched = self.finetune_all(nets, [data] * len(nets), train_cfg, seeds=[seed] * len(nets),
                                               epoch_offset=mining_epochs - 1, progress=progress)
        return self._results(mined, facts, mining_history, histories, batched, data=data, density=density,
                             val_seed=val_seed, mining_epochs=mining_epochs)

    # Batched (utils.engine.batched, FC): mining stacked over the runs, then every run's finetunes
    # (the mined net and its sanity variants) stacked together.
    def batch_kind(self) -> str:
        # one group shares the mining recipe (one stacked loop): runs with other options apart
        return "gem-miner " + json.dumps(asdict(self.options), sort_keys=True)

    def run_batched(self, models: list[nn.Module], data, densities: list[float], train_cfg, *, seeds: list[int],
                    progress: bool = True) -> list[dict[str, MethodResult]]:
        """:meth:`run` for K FC runs trained together; each result equals its run alone
        (``tests/test_batched.py``)."""
        densities = [check_density(d) for d in densities]
        splits = [self._split(data, seed) for seed in seeds]
        mining_epochs = self._mining_epochs(train_cfg)
        for model, seed in zip(models, seeds):
            self.prepare(model, seed)
        mined_runs = self.mine_batched(models, [d for d, _ in splits], densities, train_cfg, seeds=seeds,
                                       epochs=mining_epochs, progress=progress)
        rounded = [self._round(model, density, seed) for model, density, seed in zip(models, densities, seeds)]
        nets = [net for r in rounded for net in r["nets"].values()]
        owners = [i for i, r in enumerate(rounded) for _ in r["nets"]]
        histories, batched = self.finetune_all(nets, [splits[i][0] for i in owners], train_cfg,
                                               seeds=[seeds[i] for i in owners], epoch_offset=mining_epochs - 1,
                                               progress=progress)
        return [self._results(r, facts, history, [h for h, o in zip(histories, owners) if o == i], batched,
                              data=splits[i][0], density=densities[i], val_seed=splits[i][1],
                              mining_epochs=mining_epochs)
                for i, (r, (history, facts)) in enumerate(zip(rounded, mined_runs))]

    # ---- the phases of a run ---------------------------------------------------------------

    def _split(self, data, seed: int):
        """(the run's data, the split seed): ``val_size`` training images held out for ``val_acc``,
        drawn from the run's ``val`` stream, unless ``data`` has a validation split (seed None)."""
        from utils.engine.data import split_validation
        o = self.options
        if not o.val_size or getattr(data, "val_x", None) is not None:
            return data, None
        if o.val_size >= len(data.train_y):
            raise UserError(f"val_size {o.val_size} ≥ {len(data.train_y)} training images")
        val_seed = stream_seed(seed, "val")
        return split_validation(data, o.val_size, val_seed), val_seed

    def _mining_epochs(self, train_cfg) -> int:
        return self.options.mining_epochs if self.options.mining_epochs is not None else train_cfg.epochs

    def _trains_sanity(self, seed: int) -> bool:
        o = self.options
        return o.sanity_checks and (o.sanity_seeds is None or seed in o.sanity_seeds)

    def epochs(self, train_cfg, seed: int) -> int:
        """The mining epochs, then the finetune of the mined network and of each sanity variant."""
        return self._mining_epochs(train_cfg) + train_cfg.epochs * (1 + len(self.variants) * self._trains_sanity(seed))

    def _round(self, model: nn.Module, density: float, seed: int) -> dict:
        """After mining: round the scores, fix the mask, build the sanity variants. Returns the nets
        to finetune (``{stored name: (model, flag density, description)}``), their init copies and
        what the results record."""
        mined = {n: p.scores.detach().clone() for n, p in gem_masks(model).items()}
        mask, flags, rounded = self.round_masks(model, density, seed)
        total = sum(f.numel() for f in flags.values())
        flag_density = sum(int(f.sum()) for f in flags.values()) / total
        # Freeze: plain masks; keep pruned weights (the flag analysis reads flagged-but-inactive ones).
        set_masks(model, mask, zero_pruned=False)
        base = copy.deepcopy(model)            # post-rounding: init weights + final mask
        sanity = (self._sanity_variants(base, mask, flags, rounded, seed=seed, total=total)
                  if self._trains_sanity(seed) else {})
        nets = {self.name: (model, flag_density, "gem-miner finetune"),
                **{name: (v["model"], v["flag_density"], v["desc"]) for name, v in sanity.items()}}
        inits = {name: copy.deepcopy(net) for name, (net, _, _) in nets.items()}
        return {"nets": nets, "inits": inits, "sanity": sanity, "mask": mask, "flags": flags,
                "rounded": rounded, "mined": mined, "flag_density": flag_density}

    def _results(self, r: dict, facts: dict, mining_history: pd.DataFrame, histories: list[pd.DataFrame],
                 batched: int, *, data, density: float, val_seed: int | None, mining_epochs: int
                 ) -> dict[str, MethodResult]:
        """The stored results of one run: the mined net and its sanity variants, each with the
        mining history followed by its finetune."""
        o = self.options
        histories = {name: pd.concat([mining_history, h], ignore_index=True) for name, h in zip(r["nets"], histories)}
        mask, flags, rounded, mined = r["mask"], r["flags"], r["rounded"], r["mined"]
        total = facts["total"]
        kept = sum(int(m.sum()) for m in mask.values())
        completed = sum(int((mask[n] & ~(mined[n].to(mask[n].device) > 0.5)).sum()) for n in mask)
        info = {"mode": o.mode, "scope": o.scope, "unflag": o.unflag, "target_density": density,
                "target_kept": kept_count(density, total), "density": kept / total, "kept": kept,
                "density_flag": r["flag_density"], "flags": facts["flags"],
                "density_effective_mined": facts["effective_mined"] / total,
                "completed_inactive": completed if o.mode == "target" else 0,
                "mining_epochs": mining_epochs, "period": o.period,
                "prunes": facts["prunes"], "prune_epochs": facts["prune_epochs"],
                "planned_prunes": facts["planned_prunes"],
                "prune_rate": facts["prune_rate"], "stopped_at_epoch": facts["stopped_at_epoch"],
                "score_l2": o.score_l2, "val_size": len(data.val_y) if data.val_y is not None else 0,
                "val_split_seed": val_seed, "finetunes_batched": batched}
        extras = {f"flag.{n}": f.cpu() for n, f in flags.items()}
        extras.update({f"scores.{n}": v.cpu().bool() for n, v in rounded.items()})
        if val_seed is not None:
            extras["val_indices"] = data.val_indices.clone()
        model = r["nets"][self.name][0]
        results = {self.name: MethodResult(model, r["inits"][self.name], histories[self.name], extras, support=flags,
                                           info=info)}
        for name, v in r["sanity"].items():
            results[name] = MethodResult(v["model"], r["inits"][name], histories[name], extras=v["extras"],
                                         support=v["support"], info={**v["info"], "finetunes_batched": batched})
        return results

    def finetune_all(self, nets: list[tuple[nn.Module, float, str]], data: list, train_cfg, *, seeds: list[int],
                     epoch_offset: int, progress: bool = True) -> tuple[list[pd.DataFrame], int]:
        """Finetune ``(model, flag density, description)`` triples, net i on ``data[i]`` with
        ``seeds[i]``, each as :meth:`finetune` would.

        FC models train together in batched loops of at most :data:`FINETUNE_STACK` nets
        (:func:`utils.engine.batched.train_batched`: the same result to float32 accumulation
        order, ``tests/test_batched.py``); others one after the other.  Returns (histories, K):
        the most nets trained together, 1 when alone.
        """
        from utils.engine.batched import stackable, train_batched
        models = [net for net, _, _ in nets]
        if len(models) < 2 or not stackable(models, train_cfg):
            return [self.finetune(net, d, train_cfg, seed=seed, epoch_offset=epoch_offset, flag_density=f,
                                  progress=progress, desc=desc)
                    for (net, f, desc), d, seed in zip(nets, data, seeds)], 1
        groups = -(-len(models) // FINETUNE_STACK)
        size = -(-len(models) // groups)               # equal groups, none above FINETUNE_STACK
        histories = []
        for start in range(0, len(models), size):
            part = slice(start, start + size)
            columns = [self._columns(d, train_cfg, lambda m, f=f: f) for (_, f, _), d in zip(nets[part], data[part])]
            histories += train_batched(models[part], data[part], train_cfg, seeds=seeds[part], phase="finetune",
                                       progress=progress, desc=f"gem-miner finetune ×{len(models[part])}",
                                       epoch_offset=epoch_offset, train_biases=self.options.train_biases,
                                       columns=columns)
        for history in histories:
            history.loc[0, "phase"] = "rounded"
            history["reg_loss"] = 0.0
        return histories, min(size, len(models))

    def _sanity_variants(self, base: nn.Module, mask, flags, rounded, *, seed: int, total: int) -> dict[str, dict]:
        """The two sanity checks before their finetune: weight reinit (kaiming-normal weights, same
        mask) and mask shuffle.  Returns ``{stored name: {model, flag_density, desc, extras,
        support, info}}``."""
        o = self.options
        gen = generator(seed, "sanity")
        n_flags = sum(int(f.sum()) for f in flags.values())

        reinit = copy.deepcopy(base)
        with torch.no_grad():
            for module in prunable_layers(reinit).values():
                nn.init.kaiming_normal_(raw_weight(module), mode="fan_in", nonlinearity="relu", generator=gen)
        out = {f"{self.name}-reinit": {
            "model": reinit, "flag_density": n_flags / total, "desc": "gem-miner reinit", "extras": {},
            "support": flags, "info": {"sanity": "weight-reinit", "mode": o.mode, "unflag": o.unflag,
                                       "density": sum(int(m.sum()) for m in mask.values()) / total}}}

        shuffle = copy.deepcopy(base)
        if o.mode == "thesis":
            # Thesis/upstream: permute the flags per layer, AND with the *unshuffled* rounded scores.
            new_flags = {n: _permute(f, gen) for n, f in flags.items()}
            new_mask = {n: new_flags[n] & rounded[n].to(new_flags[n].device) for n in flags}
            support = new_flags
        else:
            # Default: permute the effective mask within each layer (per-layer density preserved).
            new_mask = {n: _permute(m, gen) for n, m in mask.items()}
            new_flags, support = new_mask, None
        set_masks(shuffle, new_mask, zero_pruned=False)
        out[f"{self.name}-shuffle"] = {
            "model": shuffle, "flag_density": sum(int(f.sum()) for f in new_flags.values()) / total,
            "desc": "gem-miner shuffle",
            "extras": {f"flag.{n}": f.cpu() for n, f in new_flags.items()} if o.mode == "thesis" else {},
            "support": support, "info": {"sanity": "mask-shuffle", "mode": o.mode, "unflag": o.unflag,
                                         "density": sum(int(m.sum()) for m in new_mask.values()) / total}}
        return out


def _permute(t: Tensor, gen: torch.Generator) -> Tensor:
    flat = t.reshape(-1)
    idx = torch.randperm(flat.numel(), generator=gen).to(flat.device)
    return flat[idx].view(t.shape).clone()
