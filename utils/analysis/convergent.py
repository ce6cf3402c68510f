"""Convergent learning: unit activation correlations and matchings (SPEC §9.5; Li et al. 2016).

Activations are (n_samples, n_units) arrays per layer; for conv layers every spatial
position of every image is a sample, so a (N, C, H, W) output becomes (N·H·W, C).
Correlations are Pearson with the population σ, computed streamingly (Chan et al.'s
pairwise update of centred co-moments); a unit whose activation is constant (σ = 0)
is *dead*: its correlations are 0, never NaN, and dead units are counted.

Similarity of two nets = mean over layers of the mean matched correlation. By default
dead units take no part: each layer matches the live units of one net to the live units of
the other and averages over those pairs (a net against itself is then exactly 1), and the
dead counts are reported.  The output (class) units are paired by identity.
``compat="thesis"`` matches every layer, counts dead units as correlation 0 and uses the
thesis's linearised activations (the thesis's image set — the first shuffled batch of 600
train images with image 0 counted twice — is the caller's concern).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from models import analysis_layers

from .matching import match_units
from .units import as_units, get_units

# ---------------------------------------------------------------------------------------
# activations

def _as_samples(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.ndim == 4:
        t = t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
    elif t.ndim != 2:
        t = t.reshape(t.shape[0], -1)
    return t.to("cpu", torch.float64).numpy()


def _hook_points(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """(module, apply_relu) whose outputs are the real-mode activations."""
    from models.fc import FC
    from models.resnet import ResNet20
    if isinstance(model, FC):
        layers = list(model.layers)
        return [(m, i < len(layers) - 1) for i, m in enumerate(layers)]
    if isinstance(model, ResNet20):
        return [(model.bn1, True)] + [(b, False) for b in model.blocks] + [(model.fc, False)]
    modules = dict(model.named_modules())
    names = analysis_layers(model)
    return [(modules[n], i < len(names) - 1) for i, n in enumerate(names)]


def _real_activations(model: nn.Module, images: torch.Tensor) -> list[np.ndarray]:
    points = _hook_points(model)
    outputs: list[torch.Tensor | None] = [None] * len(points)
    handles = []
    for i, (module, relu) in enumerate(points):
        def hook(_m, _inp, out, i=i, relu=relu):
            outputs[i] = torch.relu(out) if relu else out
        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters())
        with torch.no_grad():
            model(images.to(param.device, param.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [_as_samples(o) for o in outputs]


def _linearised_activations(units: list[np.ndarray], images: torch.Tensor) -> list[np.ndarray]:
    x = images.to(torch.float64)
    out = []
    for w in units:
        w = torch.as_tensor(w, dtype=torch.float64)
        if w.ndim == 4:
            x = F.conv2d(x, w, padding=(w.shape[2] // 2, w.shape[3] // 2))
        else:
            if x.ndim == 4:
                c, h, wd = x.shape[1:]
                if w.shape[1] == c * h * wd:
                    x = x.flatten(1)
                elif w.shape[1] == c:
                    x = F.avg_pool2d(x, (h, wd)).flatten(1)
                else:
                    raise ValueError(f"cannot feed a {tuple(x.shape)} map into a Linear of {w.shape[1]} inputs")
            x = x @ w.T
        out.append(_as_samples(x))
    return out


def activations(model, images, mode: str = "real", masks=None) -> list[np.ndarray]:
    """Unit activations per layer.

    Args:
        model: an FC or ResNet-20 (or any model with analysis layers). For
            ``"linearised"`` a list of per-layer unit arrays is accepted too.
        images: (N, C, H, W) (or (N, 784) for the FC) tensor/array, already normalised.
        mode: ``"real"``: eval-mode forward hooks — FC: post-ReLU outputs of the 5
            hidden layers and the logits (6 layers); ResNet-20: post-ReLU stem output,
            the 9 block outputs and the logits (11 layers); other models: each analysis
            layer's output, ReLU applied except on the last. ``"linearised"`` (thesis
            ``get_feature_map``): bare ops on the masked weights, no bias, ReLU, BN,
            residual or stride — Linear: x ← W x (the first Linear flattens the image);
            conv: ``conv2d(x, W, padding=k//2)``; a Linear after a conv applies global
            average pooling (one output per analysis layer).
        masks: ``{layer: bool mask}`` override for ``"linearised"`` (e.g. Gem-Miner flags).

    Returns:
        One float64 (n_samples, n_units) array per layer; conv layers contribute
        N·H·W samples per image batch (every spatial position is a sample).
    """
    images = torch.as_tensor(images)
    if mode == "real":
        if not isinstance(model, nn.Module):
            raise TypeError("mode='real' needs a model")
        if masks is not None:
            raise ValueError("masks override is only supported with mode='linearised'")
        return _real_activations(model, images)
    if mode == "linearised":
        units = get_units(model, masks) if isinstance(model, nn.Module) else as_units(model)
        return _linearised_activations(units, images)
    raise ValueError(f"mode must be 'real' or 'linearised', got {mode!r}")


# ---------------------------------------------------------------------------------------
# correlation

class CoMoments:
    """Streaming centred co-moments of two activation sets (Chan et al. pairwise update).

    ``update(X, Y)`` with X (n, p) and Y (n, q) adds n samples; :meth:`correlation`
    returns the (p, q) Pearson matrix (population σ, dead units → 0).
    """

    def __init__(self) -> None:
        self.n = 0

    def update(self, X: np.ndarray, Y: np.ndarray) -> None:
        """Add samples: X (n, p) and Y (n, q) activations of the same n inputs."""
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"X and Y have {X.shape[0]} and {Y.shape[0]} samples")
        nb = X.shape[0]
        if nb == 0:
            return
        mx, my = X.mean(0), Y.mean(0)
        Xc, Yc = X - mx, Y - my
        cxy, m2x, m2y = Xc.T @ Yc, (Xc * Xc).sum(0), (Yc * Yc).sum(0)
        lo_x, hi_x, lo_y, hi_y = X.min(0), X.max(0), Y.min(0), Y.max(0)
        if self.n == 0:
            self.mx, self.my, self.cxy, self.m2x, self.m2y = mx, my, cxy, m2x, m2y
            self.lo_x, self.hi_x, self.lo_y, self.hi_y = lo_x, hi_x, lo_y, hi_y
            self.n = nb
            return
        n, tot = self.n, self.n + nb
        dx, dy = mx - self.mx, my - self.my
        f = n * nb / tot
        self.cxy = self.cxy + cxy + f * np.outer(dx, dy)
        self.m2x = self.m2x + m2x + f * dx * dx
        self.m2y = self.m2y + m2y + f * dy * dy
        self.mx = self.mx + dx * nb / tot
        self.my = self.my + dy * nb / tot
        self.lo_x, self.hi_x = np.minimum(self.lo_x, lo_x), np.maximum(self.hi_x, hi_x)
        self.lo_y, self.hi_y = np.minimum(self.lo_y, lo_y), np.maximum(self.hi_y, hi_y)
        self.n = tot

    @property
    def dead_x(self) -> np.ndarray:
        """Bool (p,): units of X with constant activation (σ = 0)."""
        return self.hi_x == self.lo_x

    @property
    def dead_y(self) -> np.ndarray:
        """Bool (q,): units of Y with constant activation (σ = 0)."""
        return self.hi_y == self.lo_y

    def correlation(self) -> np.ndarray:
        """(p, q) Pearson correlations; rows/columns of dead units are 0."""
        if self.n == 0:
            raise ValueError("no samples")
        sx = np.where(self.dead_x, 0.0, np.sqrt(np.maximum(self.m2x, 0)))
        sy = np.where(self.dead_y, 0.0, np.sqrt(np.maximum(self.m2y, 0)))
        denom = np.outer(sx, sy)
        with np.errstate(invalid="ignore", divide="ignore"):
            c = np.where(denom > 0, self.cxy / np.where(denom > 0, denom, 1), 0.0)
        return np.clip(c, -1.0, 1.0)


def correlation(X, Y=None) -> np.ndarray:
    """Pearson correlation of every unit of X with every unit of Y (population σ).

    Args:
        X: (n_samples, p) activations; Y: (n_samples, q), default X.

    Returns:
        (p, q) float array; a unit with σ = 0 (constant, "dead") gets 0, never NaN.
    """
    acc = CoMoments()
    acc.update(X, X if Y is None else Y)
    return acc.correlation()


def dead_units(X) -> int:
    """Number of units (columns of the (n_samples, p) array X) with σ = 0."""
    X = np.asarray(X)
    return int((X.max(0) == X.min(0)).sum())


# ---------------------------------------------------------------------------------------
# matchings

def semi_matching(C, ignore_diag: bool = False) -> np.ndarray:
    """Row-wise argmax of a correlation matrix (columns may repeat).

    Args:
        C: (p, q) correlations of net-A units (rows) with net-B units (columns).
        ignore_diag: forbid i → i (within-net baseline).

    Returns:
        int array ``order`` (p,): row i is paired with column ``order[i]`` (first max).
    """
    C = np.array(C, dtype=float)
    if ignore_diag:
        np.fill_diagonal(C, -np.inf)
    return C.argmax(axis=1)


def max_matching(C, ignore_diag: bool = False) -> np.ndarray:
    """One-to-one matching maximising the total correlation (``linear_sum_assignment``).

    Args:
        C: (p, q) correlations, p ≤ q.
        ignore_diag: forbid i → i (within-net baseline); never returns a fixed point.

    Returns:
        int array ``order`` (p,): row i is matched to column ``order[i]``. The thesis's
        networkx ``max_weight_matching(maxcardinality=True)`` gives the same assignment.
    """
    C = np.array(C, dtype=float)
    if ignore_diag:
        np.fill_diagonal(C, -np.inf)
        rows, cols = linear_sum_assignment(C, maximize=True)
        order = np.empty(C.shape[0], dtype=np.int64)
        order[rows] = cols
        return order
    return match_units(C, maximize=True)


def reorder(C, order) -> np.ndarray:
    """Permute the columns of C so that the matches lie on the diagonal: ``C[:, order]``."""
    return np.asarray(C)[:, np.asarray(order)]


# ---------------------------------------------------------------------------------------
# similarity

@dataclass
class Similarity:
    """Result of :func:`similarity`.

    Attributes:
        layers: per-layer mean matched correlation (NaN for a layer without live units).
        mean: mean over layers (those with live units).
        orders: per-layer matchings (row i of A ↔ column ``orders[l][i]`` of B; −1 for a unit
            left out: dead, or live without a live partner).
        dead_a, dead_b: per-layer number of dead (σ = 0) units in A and B.
        correlations: per-layer (p, q) matrices if requested, else ``None``.
    """

    layers: np.ndarray
    mean: float
    orders: list[np.ndarray]
    dead_a: list[int]
    dead_b: list[int]
    correlations: list[np.ndarray] | None = field(default=None, repr=False)


def _layer_match(C: np.ndarray, matching: str, identity: bool) -> np.ndarray:
    if identity:
        return np.arange(C.shape[0])
    if matching == "max":
        return max_matching(C)
    if matching == "semi":
        return semi_matching(C)
    raise ValueError(f"matching must be 'max' or 'semi', got {matching!r}")


def matched_correlation(C: np.ndarray, dead_a=None, dead_b=None, identity: bool = False,
                        matching: str = "max", exclude_dead: bool = True) -> tuple[float, np.ndarray]:
    """Mean correlation of the matched unit pairs of one layer.

    Args:
        C: (p, q) correlations of A's units (rows) with B's (columns).
        dead_a, dead_b: bool (p,), (q,): units with σ = 0 on the images.
        identity: pair unit i with unit i (the class units of the output layer).
        matching: ``"max"`` (one-to-one, :func:`max_matching`) or ``"semi"``.
        exclude_dead: match live units to live units only and average over those pairs (a
            net against itself gives 1); ``False`` keeps dead units as correlation 0 (thesis).

    Returns:
        (mean matched correlation, NaN if no live pair; ``order`` (p,) with −1 for rows left out).

    >>> matched_correlation(np.eye(3), dead_a=np.array([False, True, False]),
    ...                     dead_b=np.array([False, True, False]))[0]
    1.0
    """
    C = np.asarray(C, dtype=float)
    p, q = C.shape
    live_a = ~np.asarray(dead_a, bool) if (exclude_dead and dead_a is not None) else np.ones(p, bool)
    live_b = ~np.asarray(dead_b, bool) if (exclude_dead and dead_b is not None) else np.ones(q, bool)
    order = np.full(p, -1, dtype=np.int64)
    if identity:
        keep = np.flatnonzero(live_a[:min(p, q)] & live_b[:min(p, q)])
        order[keep] = keep
    else:
        rows, cols = np.flatnonzero(live_a), np.flatnonzero(live_b)
        if len(rows) and len(cols):
            sub = C[np.ix_(rows, cols)]
            if matching == "semi":
                order[rows] = cols[semi_matching(sub)]
            elif matching != "max":
                raise ValueError(f"matching must be 'max' or 'semi', got {matching!r}")
            elif len(rows) <= len(cols):
                order[rows] = cols[max_matching(sub)]
            else:                      # more live units in A: match B's units to A's
                order[rows[max_matching(sub.T)]] = cols
    matched = np.flatnonzero(order >= 0)
    value = float(C[matched, order[matched]].mean()) if len(matched) else float("nan")
    return value, order


def _summarise(corrs, dead_a, dead_b, matching, match_output, keep, exclude_dead=True) -> Similarity:
    values, orders = [], []
    for layer, C in enumerate(corrs):
        identity = layer == len(corrs) - 1 and not match_output
        value, order = matched_correlation(C, dead_a[layer], dead_b[layer], identity=identity, matching=matching,
                                           exclude_dead=exclude_dead)
        orders.append(order)
        values.append(value)
    values = np.array(values)
    return Similarity(values, float(np.nanmean(values)) if np.isfinite(values).any() else float("nan"), orders,
                      [int(np.sum(d)) for d in dead_a], [int(np.sum(d)) for d in dead_b],
                      list(corrs) if keep else None)


def _exclude_dead(dead: str, compat: str | None) -> bool:
    if dead not in ("exclude", "zero"):
        raise ValueError(f"dead must be 'exclude' or 'zero', got {dead!r}")
    return dead == "exclude" and compat != "thesis"


def _options(mode, match_output, compat):
    if compat is None:
        return mode, match_output
    if compat == "thesis":
        return "linearised", True
    raise ValueError(f"compat must be None or 'thesis', got {compat!r}")


def similarity(model_a, model_b, images, mode: str = "real", matching: str = "max",
               match_output: bool = False, compat: str | None = None, masks_a=None, masks_b=None,
               batch_size: int = 500, keep_correlations: bool = False, dead: str = "exclude") -> Similarity:
    """Convergent-learning similarity of two networks on a set of images.

    Activations are computed batch by batch and only the co-moments are kept, so
    large conv nets fit in memory.

    Args:
        model_a, model_b: models of the same architecture (unit lists for
            ``"linearised"``).
        images: (N, C, H, W) tensor/array, normalised, in a fixed order.
        mode: ``"real"`` or ``"linearised"`` (see :func:`activations`).
        matching: ``"max"`` (one-to-one) or ``"semi"`` (row-wise argmax).
        match_output: also match the output layer (default: paired by identity).
        compat: ``"thesis"`` = linearised activations and every layer matched.
        masks_a, masks_b: mask overrides for ``"linearised"``.
        batch_size: images per forward pass.
        keep_correlations: keep the per-layer correlation matrices in the result.
        dead: ``"exclude"`` (units with σ = 0 take no part in the matching or the mean) or
            ``"zero"`` (they count as correlation 0, the thesis; ``compat="thesis"`` sets it).

    Returns:
        :class:`Similarity` (per-layer mean matched correlation, their mean, matchings
        and dead-unit counts).
    """
    mode, match_output = _options(mode, match_output, compat)
    exclude = _exclude_dead(dead, compat)
    images = torch.as_tensor(images)
    accs: list[CoMoments] | None = None
    for start in range(0, images.shape[0], batch_size):
        batch = images[start:start + batch_size]
        acts_a = activations(model_a, batch, mode, masks_a)
        acts_b = acts_a if (model_b is model_a and masks_b is masks_a) else activations(model_b, batch, mode, masks_b)
        if len(acts_a) != len(acts_b):
            raise ValueError(f"networks have {len(acts_a)} and {len(acts_b)} activation layers")
        if accs is None:
            accs = [CoMoments() for _ in acts_a]
        for acc, xa, xb in zip(accs, acts_a, acts_b):
            acc.update(xa, xb)
    if accs is None:
        raise ValueError("no images")
    corrs = [acc.correlation() for acc in accs]
    return _summarise(corrs, [a.dead_x for a in accs], [a.dead_y for a in accs],
                      matching, match_output, keep_correlations, exclude_dead=exclude)


def standardised(acts: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per layer, the z-scored activations (dead units → 0) and the bool mask of dead units."""
    out, dead = [], []
    for X in acts:
        mean, std = X.mean(0), X.std(0)
        d = X.max(0) == X.min(0)
        std = np.where(d, 1.0, std)
        Z = (X - mean) / std
        Z[:, d] = 0.0
        out.append(Z)
        dead.append(d)
    return out, dead


def similarity_matrix(models, images, names=None, mode: str = "real", matching: str = "max",
                      match_output: bool = False, compat: str | None = None, masks=None,
                      batch_size: int = 500, dead: str = "exclude") -> pd.DataFrame:
    """Pairwise :func:`similarity` of n networks as an n×n DataFrame.

    Each model's activations are computed once and kept (standardised) in memory —
    fine for the FC on 600 images; for large conv nets call :func:`similarity` per pair.

    Args:
        models: list of models (or unit lists for ``"linearised"``).
        images: (N, C, H, W) tensor/array.
        names: labels (default 0..n−1).
        mode, matching, match_output, compat, dead: as in :func:`similarity`.
        masks: optional list of per-model mask overrides (``"linearised"`` only).
        batch_size: images per forward pass.

    Returns:
        DataFrame, entry (i, j) = similarity(models[i], models[j]); the diagonal is each
        net's self-similarity (1: dead units are left out). With ``matching="max"`` the
        matrix is symmetric and only i ≤ j is computed. ``df.attrs["dead"]`` lists the
        per-layer dead-unit counts of each model.  ``compat="thesis"`` computes only i < j and
        puts 1 on the diagonal, as the published figure shows (the thesis's own correlation of
        a net with itself is below 1 when it has dead units, so it cannot have computed it).
    """
    mode, match_output = _options(mode, match_output, compat)
    exclude = _exclude_dead(dead, compat)
    n = len(models)
    names = list(range(n)) if names is None else list(names)
    masks = [None] * n if masks is None else list(masks)
    images = torch.as_tensor(images)
    cache, dead = [], []
    for model, m in zip(models, masks):
        batches = [activations(model, images[s:s + batch_size], mode, m)
                   for s in range(0, images.shape[0], batch_size)]
        acts = [np.concatenate(layer) for layer in zip(*batches)]
        z, d = standardised(acts)
        cache.append(z)
        dead.append(d)
    values = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if matching == "max" and j < i:
                values[i, j] = values[j, i]
                continue
            if compat == "thesis" and i == j:
                values[i, j] = 1.0
                continue
            corrs = [np.clip(za.T @ zb / za.shape[0], -1.0, 1.0) for za, zb in zip(cache[i], cache[j])]
            values[i, j] = _summarise(corrs, dead[i], dead[j], matching, match_output, False,
                                      exclude_dead=exclude).mean
    df = pd.DataFrame(values, index=names, columns=names)
    df.attrs["dead"] = {name: [int(d.sum()) for d in layers] for name, layers in zip(names, dead)}
    return df
