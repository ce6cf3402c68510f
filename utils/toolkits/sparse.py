"""Real sparse layers (peer: ActuallySparse): only the active weights are stored.

A masked layer of this project keeps a dense weight plus a bool mask (5 bytes per weight
at float32).  The layers here keep only the active entries of the **effective mask**
(never ``weight != 0``), so a 2 % dense layer really costs ~2 % of the memory:

===============  ======  ========================================================
class            format  storage / compute
===============  ======  ========================================================
SparseLinear     COO     ``indices`` (2, nnz) int64 buffer, ``values`` Parameter;
                         forward ``torch.sparse.mm`` on a COO tensor
CSRLinear        CSR     ``crow_indices`` (out+1) / ``col_indices`` (nnz) buffers
                         (int32 when they fit), ``values``; forward
                         ``torch.sparse.mm`` on a CSR tensor (MKL)
SparseConv2d     COO     the (out, in*kh*kw) kernel matrix as above; forward
CSRConv2d        CSR     ``F.unfold`` + sparse matmul (groups=1, zero padding)
===============  ======  ========================================================

All four train by default (``trainable=True``): gradients reach ``values`` and ``bias``
through ``torch.sparse.mm``, whose CSR backward works on CPU in torch 2.13 (as upstream,
whose CSR ``values`` are plain Parameters).  ``trainable=False`` freezes them.

Orientation is PyTorch's: rows are output units, columns the flattened
(in[, kh, kw]) fan-in.  ``y = x W^T + b`` is computed as ``(W x^T)^T``.

:func:`convert` turns one layer into ``"dense"`` (an ``nn.Linear``/``nn.Conv2d`` carrying the
project's :class:`models.masks.Mask` with the stored pattern), ``"coo"`` or ``"csr"``;
:func:`convert_model` does it for every layer of a kind; :func:`memory_report` lists
bytes per layer.

ActuallySparse (``jakfol1217/ActuallySparse``, ``actuallysparse.layers.SparseLayer`` and
``actuallysparse.converter``) drop-in: ``convert(layer, target, mask)``, ``convert_model(model,
layer_type, target)``, and on every layer ``.weight`` (the sparse (out, fan_in) tensor),
``set_k``, ``prune_smallest_values`` and ``assign_new_weight``; a 1-D input gives (1, out).
Deliberate differences are listed in ``tests/test_compat_actuallysparse.py``.

Measured (``benchmarks/bench_sparse_inference.py``, torch 2.13 CPU, 1 thread): CSR weights
take 4.4 / 10 / 20 / 40 / 100 % of the dense bytes at density 2 / 5 / 10 / 20 / 50 %.
CSR Linear (FC 784-100x5-10) is 0.34x / 0.43x / 0.58x / 0.92x / 2.1x the dense time at
batch 256, but ~2x slower at batch 1 (per-call overhead).  CSR conv (ResNet-20) is
correct but ~5x slower than dense at batch 256 and 1-3x at batch 1 (``F.unfold``
dominates), so converting convs saves memory only; ``convert_model`` therefore
defaults to ``nn.Linear``.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
import warnings

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from models.masks import attach_masks, mask_of, prunable_layers, set_masks

__all__ = ["SparseLinear", "CSRLinear", "SparseConv2d", "CSRConv2d", "convert", "convert_model",
           "memory_report", "is_sparse_layer", "FORMATS", "TargetError"]

FORMATS = ("dense", "coo", "csr")


class TargetError(ValueError, TypeError):
    """Unknown conversion target: a ValueError here, and a TypeError as upstream ActuallySparse raises."""


# PyTorch warns once per process that CSR support is "beta"; trigger that once, silenced.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.sparse_csr_tensor(torch.tensor([0, 0]), torch.tensor([], dtype=torch.int64),
                            torch.tensor([]), (1, 1), check_invariants=False)


class _SparseLayer(nn.Module):
    """Shared storage: a sparse (out, fan_in) matrix of the active entries, plus a bias."""

    FORMAT = "coo"
    #: fraction of all (out · fan_in) entries that :meth:`prune_smallest_values` prunes (upstream default)
    k: float = 0.05

    def _init_storage(self, weight: Tensor, mask: Tensor, bias: Tensor | None, trainable: bool) -> None:
        self.weight_shape = tuple(weight.shape)
        out = weight.shape[0]
        mask2 = mask.reshape(out, -1).bool().to(weight.device)
        w2 = weight.detach().reshape(out, -1)
        self.fan_in = w2.shape[1]
        rows, cols = mask2.nonzero(as_tuple=True)  # row-major: coalesced COO and CSR order
        self._set_entries(rows, cols, w2[rows, cols].clone(), trainable)
        if bias is not None:
            self.bias = nn.Parameter(bias.detach().clone(), requires_grad=trainable)
        else:
            self.register_parameter("bias", None)

    def _set_entries(self, rows: Tensor, cols: Tensor, values: Tensor, trainable: bool) -> None:
        """Store the entries ``(rows[i], cols[i]) -> values[i]`` (each (nnz,), row-major order)."""
        self.values = nn.Parameter(values, requires_grad=trainable)
        if self.FORMAT == "coo":
            self.register_buffer("indices", torch.stack([rows, cols]).long())
            return
        out = self.weight_shape[0]
        dtype = torch.int32 if max(values.numel(), self.fan_in) < 2 ** 31 - 1 else torch.int64
        crow = torch.zeros(out + 1, dtype=torch.int64, device=values.device)
        crow[1:] = torch.bincount(rows, minlength=out).cumsum(0)
        self.register_buffer("crow_indices", crow.to(dtype))
        self.register_buffer("col_indices", cols.to(dtype))

    @property
    def weight(self) -> Tensor:
        """The sparse (out, fan_in) weight, COO or CSR as stored (upstream ``SparseLayer.weight``).

        Built from ``values``, so it carries their gradient.  Example::

            SparseLinear(3, 2).weight.to_dense().shape  # torch.Size([2, 3])
        """
        return self.sparse_weight()

    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def density(self) -> float:
        return self.nnz / math.prod(self.weight_shape)

    def _rows_cols(self) -> tuple[Tensor, Tensor]:
        if self.FORMAT == "coo":
            return self.indices[0], self.indices[1]
        counts = self.crow_indices.long().diff()
        rows = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
        return rows, self.col_indices.long()

    def sparse_weight(self) -> Tensor:
        """The (out, fan_in) sparse weight (COO or CSR tensor; differentiable in ``values``)."""
        size = (self.weight_shape[0], self.fan_in)
        if self.FORMAT == "coo":
            return torch.sparse_coo_tensor(self.indices, self.values, size, is_coalesced=True,
                                           check_invariants=False)
        return torch.sparse_csr_tensor(self.crow_indices, self.col_indices, self.values, size,
                                       check_invariants=False)

    def dense_weight(self) -> Tensor:
        """Dense weight shaped like the original layer's (zeros outside the pattern)."""
        rows, cols = self._rows_cols()
        w = torch.zeros(self.weight_shape[0], self.fan_in, dtype=self.values.dtype,
                        device=self.values.device)
        w = w.index_put((rows, cols), self.values)
        return w.reshape(self.weight_shape)

    def dense_mask(self) -> Tensor:
        """Bool mask of the stored pattern, shaped like the weight."""
        rows, cols = self._rows_cols()
        m = torch.zeros(self.weight_shape[0], self.fan_in, dtype=torch.bool, device=self.values.device)
        m[rows, cols] = True
        return m.reshape(self.weight_shape)

    def set_k(self, k: float) -> None:
        """Set the fraction of all entries :meth:`prune_smallest_values` prunes (upstream ``set_k``)."""
        if not 0 <= k <= 1:
            raise ValueError(f"k must be a fraction in [0, 1], got {k}")
        self.k = k

    @torch.no_grad()
    def prune_smallest_values(self, remove_zeros: bool = True) -> None:
        """Prune the floor(k · out · fan_in) stored entries of smallest |value| (upstream semantics).

        ``k`` (see :meth:`set_k`) counts against all entries of the weight, not the stored
        ones; with fewer stored entries all go.  Ties: lower storage (row-major) index first.
        ``remove_zeros`` drops the pruned entries from storage (new ``values`` Parameter:
        rebuild optimizers); otherwise they stay stored with value 0.  Example::

            layer = SparseLinear(5, 2); layer.set_k(0.3); layer.prune_smallest_values()
            layer.nnz  # 7 = 10 - floor(0.3 · 10)
        """
        count = math.floor(self.k * self.fan_in * self.weight_shape[0])  # upstream's k·in·out order
        pruned = torch.argsort(self.values.abs(), stable=True)[:count]
        if not remove_zeros:
            self.values[pruned] = 0
            return
        keep = torch.ones(self.nnz, dtype=torch.bool, device=self.values.device)
        keep[pruned] = False
        rows, cols = self._rows_cols()
        self._set_entries(rows[keep], cols[keep], self.values[keep].clone(), self.values.requires_grad)

    def _weight_like(self, weight: Tensor) -> Tensor:
        """``weight`` reshaped to ``weight_shape``: accepts that shape, (out, fan_in) and, as
        upstream does, the transpose (fan_in, out)."""
        out = self.weight_shape[0]
        if tuple(weight.shape) in (self.weight_shape, (out, self.fan_in)):
            return weight.reshape(self.weight_shape)
        if tuple(weight.shape) == (self.fan_in, out):
            return weight.t().reshape(self.weight_shape)
        raise ValueError(f"weight shape mismatch: got {tuple(weight.shape)}, layer is {self.weight_shape}")

    @torch.no_grad()
    def assign_new_weight(self, new_weight: Tensor, bias: Tensor | None = None, *,
                          mask: Tensor | None = None) -> None:
        """Store a new dense weight (upstream ``assign_new_weight``); the bias too if given.

        Args:
            new_weight: dense, shaped ``weight_shape``, (out, fan_in) or (fan_in, out).
            bias: (out,) or None (keep the current bias).
            mask: bool pattern to store, any of those shapes; default the nonzeros of
                ``new_weight`` (upstream: zeros are dropped).

        ``requires_grad`` is kept; ``values``/``bias`` are new Parameters (rebuild optimizers).
        Example: ``layer.assign_new_weight(torch.eye(3), torch.zeros(3))`` stores 3 entries.
        """
        if not torch.is_tensor(new_weight):
            raise TypeError("new_weight must be a Tensor")
        if bias is not None and tuple(bias.shape) != (self.weight_shape[0],):
            raise ValueError(f"bias shape mismatch: got {tuple(bias.shape)}, need ({self.weight_shape[0]},)")
        like = dict(device=self.values.device, dtype=self.values.dtype)
        weight = self._weight_like(new_weight.detach().to(**like))
        keep = weight != 0 if mask is None else self._weight_like(mask.to(self.values.device)).bool()
        bias = self.bias if bias is None else bias.detach().to(**like)
        self._init_storage(weight, keep, bias, self.values.requires_grad)

    def _matmul_t(self, cols: Tensor) -> Tensor:
        """``W @ cols`` for dense ``cols`` of shape (fan_in, N) -> (out, N)."""
        return torch.sparse.mm(self.sparse_weight(), cols)

    def extra_repr(self) -> str:
        return (f"shape={self.weight_shape}, nnz={self.nnz}, density={self.density:.4f}, "
                f"format={self.FORMAT}, bias={self.bias is not None}, k={self.k}")


class SparseLinear(_SparseLayer):
    """Linear layer storing only active weights in COO.

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        mask: bool (out, in) pattern to keep (default: all).
        weight: dense (out, in) initial weight (default: ``nn.Linear`` init).
        trainable: ``requires_grad`` of ``values`` and ``bias``.

    Input (..., in) -> output (..., out); a 1-D (in,) input gives (1, out), as upstream.
    Example: ``SparseLinear(4, 3, mask=torch.eye(3, 4).bool())(torch.ones(4)).shape == (1, 3)``.
    """

    FORMAT = "coo"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 mask: Tensor | None = None, weight: Tensor | None = None,
                 bias_value: Tensor | None = None, trainable: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        if weight is None or (bias and bias_value is None):
            ref = nn.Linear(in_features, out_features, bias=bias)
            weight = ref.weight.detach() if weight is None else weight
            bias_value = ref.bias.detach() if bias and bias_value is None else bias_value
        if mask is None:
            mask = torch.ones(out_features, in_features, dtype=torch.bool)
        self._init_storage(weight, mask, bias_value if bias else None, trainable)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 1:  # upstream ActuallySparse reads a vector as a batch of one: (in,) -> (1, out)
            x = x.unsqueeze(0)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        y = self._matmul_t(x2.t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)


class CSRLinear(SparseLinear):
    """Linear layer in CSR; same arguments as :class:`SparseLinear` (trainable by default)."""

    FORMAT = "csr"


class SparseConv2d(_SparseLayer):
    """Conv2d storing only active kernel entries in COO; forward = unfold + sparse mm.

    Same arguments as ``nn.Conv2d`` (``groups=1`` and zero padding only) plus ``mask``,
    ``weight``, ``bias_value`` and ``trainable`` as :class:`SparseLinear`.
    """

    FORMAT = "coo"

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, bias: bool = True, *, mask: Tensor | None = None,
                 weight: Tensor | None = None, bias_value: Tensor | None = None,
                 trainable: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        if weight is None or (bias and bias_value is None):
            ref = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=bias)
            weight = ref.weight.detach() if weight is None else weight
            bias_value = ref.bias.detach() if bias and bias_value is None else bias_value
        if mask is None:
            mask = torch.ones(out_channels, in_channels, *self.kernel_size, dtype=torch.bool)
        self._init_storage(weight, mask, bias_value if bias else None, trainable)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        kh, kw = self.kernel_size
        ho = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # (B, K, L)
        # One (out, K) @ (K, L) product per sample: measured ~2x faster at batch 256 than one
        # product on the transposed (K, B*L) matrix, whose transposes dominate.
        w = self.sparse_weight()
        y = torch.stack([torch.sparse.mm(w, cols[i]) for i in range(b)]).view(b, self.out_channels, ho, wo)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y


class CSRConv2d(SparseConv2d):
    """Conv2d in CSR; same arguments as :class:`SparseConv2d`."""

    FORMAT = "csr"


_SPARSE = {("linear", "coo"): SparseLinear, ("linear", "csr"): CSRLinear,
           ("conv", "coo"): SparseConv2d, ("conv", "csr"): CSRConv2d}


def is_sparse_layer(module: nn.Module) -> bool:
    return isinstance(module, _SparseLayer)


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, (nn.Linear, SparseLinear)):
        return "linear"
    if isinstance(module, (nn.Conv2d, SparseConv2d)):
        return "conv"
    return None


def _format(module: nn.Module) -> str:
    return module.FORMAT if is_sparse_layer(module) else "dense"


def _state(layer: nn.Module) -> dict:
    """Effective weight, mask, bias and hyper-parameters of any supported layer."""
    kind = _kind(layer)
    if kind is None:
        raise TypeError(f"cannot convert {type(layer).__name__}; need Linear/Conv2d or a sparse layer")
    if is_sparse_layer(layer):
        weight, mask = layer.dense_weight().detach(), layer.dense_mask()
        requires_grad = layer.values.requires_grad
    else:
        if isinstance(layer, nn.Conv2d) and (layer.groups != 1 or layer.padding_mode != "zeros"
                                             or isinstance(layer.padding, str)):
            raise NotImplementedError("sparse Conv2d supports groups=1, numeric zero padding only")
        mask = mask_of(layer).detach().bool()
        weight = (layer.weight.detach() * mask)  # effective weight (any parametrization)
        from models.masks import raw_weight
        requires_grad = raw_weight(layer).requires_grad
    bias = None if layer.bias is None else layer.bias.detach()
    state = dict(kind=kind, weight=weight, mask=mask, bias=bias, requires_grad=requires_grad,
                 prunable=getattr(layer, "prunable", True))
    if kind == "conv":
        state.update(in_channels=layer.in_channels, out_channels=layer.out_channels,
                     kernel_size=_pair(layer.kernel_size), stride=_pair(layer.stride),
                     padding=_pair(layer.padding), dilation=_pair(layer.dilation))
    else:
        state.update(in_features=layer.in_features, out_features=layer.out_features)
    return state


def _apply_mask(s: dict, mask: Tensor) -> None:
    """Upstream's ``weight * mask``; entries where ``mask`` is 0 also leave the pattern."""
    mask = torch.as_tensor(mask, device=s["weight"].device)
    s["weight"] = s["weight"] * mask
    s["mask"] = s["mask"] & (mask != 0).expand_as(s["mask"])


@torch.no_grad()
def convert(layer: nn.Module, target: str = "csr", mask: Tensor | None = None, *,
            trainable: bool | None = None) -> nn.Module:
    """Convert one Linear/Conv2d (dense, masked or sparse) to ``"dense"``, ``"coo"`` or ``"csr"``.

    Sparse targets store the entries of the layer's effective mask (``mask_of``; all
    entries for an unmasked layer) with their effective weights.  ``"dense"`` returns a fresh
    ``nn.Linear``/``nn.Conv2d`` with the project's ``Mask`` parametrization set to the
    stored pattern (zeros elsewhere) — except for non-prunable layers (``prunable=False``)
    whose pattern is full, which stay plain.  ``mask`` (upstream's third argument; any shape
    broadcasting to the weight) multiplies the weight and removes its zeros from the pattern.
    ``trainable`` sets ``requires_grad`` of the new parameters (default: the source layer's).
    Example: ``convert(nn.Linear(3, 4), "coo", torch.eye(4, 3)).nnz == 3``.
    """
    if target not in FORMATS:
        raise TargetError(f"target must be one of {FORMATS}, got {target!r}")
    s = _state(layer)
    if mask is not None:
        _apply_mask(s, mask)
    device, dtype = s["weight"].device, s["weight"].dtype
    if target == "dense":
        if s["kind"] == "linear":
            new = nn.Linear(s["in_features"], s["out_features"], bias=s["bias"] is not None,
                            device=device, dtype=dtype)
        else:
            new = nn.Conv2d(s["in_channels"], s["out_channels"], s["kernel_size"], s["stride"],
                            s["padding"], s["dilation"], bias=s["bias"] is not None,
                            device=device, dtype=dtype)
        new.weight.copy_(s["weight"])
        if s["bias"] is not None:
            new.bias.copy_(s["bias"])
        if s["prunable"] or not bool(s["mask"].all()):
            attach_masks(new)  # a non-prunable layer with a partial pattern becomes prunable
            set_masks(new, {"": s["mask"]})
        else:
            new.prunable = False
        grad = s["requires_grad"] if trainable is None else trainable
        for p in new.parameters():
            p.requires_grad_(grad)
        return new
    cls = _SPARSE[(s["kind"], target)]
    grad = s["requires_grad"] if trainable is None else trainable
    common = dict(mask=s["mask"], weight=s["weight"], bias_value=s["bias"], trainable=grad)
    if s["kind"] == "linear":
        new = cls(s["in_features"], s["out_features"], bias=s["bias"] is not None, **common)
    else:
        new = cls(s["in_channels"], s["out_channels"], s["kernel_size"], s["stride"], s["padding"],
                  s["dilation"], bias=s["bias"] is not None, **common)
    if not s["prunable"]:
        new.prunable = False
    return new.to(device)


def _matches(module: nn.Module, layer_type) -> bool:
    types = layer_type if isinstance(layer_type, tuple) else (layer_type,)
    if isinstance(module, types):
        return True
    kind = _kind(module)
    return (kind == "linear" and nn.Linear in types) or (kind == "conv" and nn.Conv2d in types)


def convert_model(model: nn.Module, layer_type=nn.Linear, target: str = "csr",
                  inplace: bool = False, trainable: bool | None = None) -> nn.Module:
    """Replace every layer of ``layer_type`` by :func:`convert` ``(layer, target)``.

    ``layer_type`` is a class or tuple; ``nn.Linear`` also matches the sparse Linear classes
    and ``nn.Conv2d`` the sparse conv classes, so ``convert_model(m, nn.Linear, "dense")``
    undoes ``convert_model(m, nn.Linear, "csr")``.  Works on a deep copy unless ``inplace``.
    """
    if not inplace:
        model = copy.deepcopy(model)
    names = [name for name, m in model.named_modules() if _kind(m) and _matches(m, layer_type)]
    if "" in names:  # the model itself is one layer
        return convert(model, target, trainable=trainable)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, convert(getattr(parent, child), target, trainable=trainable))
    return model


def _index_bytes(nnz: int, fan_in: int) -> int:
    return 4 if max(nnz, fan_in) < 2 ** 31 - 1 else 8


def memory_report(model: nn.Module) -> pd.DataFrame:
    """Bytes per Linear/Conv2d layer (dense, masked or sparse), plus a ``total`` row.

    Columns: ``layer``, ``type``, ``format``, ``shape``, ``numel``, ``nnz`` (active entries of
    the effective mask), ``density``, ``dense_bytes`` (plain dense weight), ``masked_bytes``
    (dense weight + bool mask, this project's format), ``coo_bytes`` (values + 2 int64
    indices per entry), ``csr_bytes`` (values + int32 column index per entry + int32 row
    pointers), ``stored_bytes`` (what the layer holds now), ``bias_bytes``, and
    ``csr_ratio`` = csr_bytes / dense_bytes.  Weights only; biases are listed apart.
    """
    rows = []
    for name, m in model.named_modules():
        if _kind(m) is None:
            continue
        if is_sparse_layer(m):
            shape, nnz, elem = m.weight_shape, m.nnz, m.values.element_size()
            stored = sum(t.numel() * t.element_size() for t in
                         ([m.values] + ([m.indices] if m.FORMAT == "coo" else
                                        [m.crow_indices, m.col_indices])))
        else:
            mask = mask_of(m)
            shape, nnz, elem = tuple(mask.shape), int(mask.sum()), m.weight.element_size()
            from torch.nn.utils import parametrize
            stored = mask.numel() * elem + (mask.numel() if parametrize.is_parametrized(m, "weight") else 0)
        numel = math.prod(shape)
        idx = _index_bytes(nnz, numel // shape[0])
        rows.append(dict(layer=name, type=type(m).__name__, format=_format(m), shape=tuple(shape),
                         numel=numel, nnz=nnz, density=nnz / numel, dense_bytes=numel * elem,
                         masked_bytes=numel * (elem + 1), coo_bytes=nnz * (elem + 16),
                         csr_bytes=nnz * (elem + idx) + (shape[0] + 1) * idx, stored_bytes=stored,
                         bias_bytes=0 if m.bias is None else m.bias.numel() * m.bias.element_size()))
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    total = {c: df[c].sum() for c in ("numel", "nnz", "dense_bytes", "masked_bytes", "coo_bytes",
                                      "csr_bytes", "stored_bytes", "bias_bytes")}
    total.update(layer="total", type="", format="", shape=(), density=total["nnz"] / total["numel"])
    df = pd.concat([df, pd.DataFrame([total])], ignore_index=True)
    df["csr_ratio"] = df["csr_bytes"] / df["dense_bytes"]
    return df


def plain_dense(model: nn.Module) -> nn.Module:
    """Copy whose prunable layers are fresh plain layers holding the effective weights.

    (Not ``parametrize.remove_parametrizations`` on a deep copy: the copy shares the
    parametrized class with the original, and removal deletes the property from it.)
    """
    model = copy.deepcopy(model)
    for name, layer in list(prunable_layers(model).items()):
        if isinstance(layer, nn.Linear):
            new = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        else:
            new = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                            layer.padding, layer.dilation, bias=layer.bias is not None)
        with torch.no_grad():
            new.weight.copy_(layer.weight)
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new.eval())
    return model


def latency_ms(model: nn.Module, x: torch.Tensor, repeats: int, budget_s: float = 4.0) -> float:
    """Median forward time; slow cases get fewer repeats (about ``budget_s`` per case)."""
    with torch.inference_mode():
        t = time.perf_counter()
        model(x)  # warm-up, also sizes the number of repeats
        first = time.perf_counter() - t
        repeats = max(1, min(repeats, int(budget_s / max(first, 1e-9))))
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)
