"""utils.toolkits.sparse as a drop-in for ActuallySparse (github.com/jakfol1217/ActuallySparse).

Ports of upstream ``tests/test_layers.py``, ``tests/test_converter.py`` and ``tests/test_model.py``
(their latest stored versions); each docstring names the upstream test.  Upstream names map to
ours as: ``SparseLayer`` / ``new_random_basic_coo`` -> :class:`SparseLinear`,
``new_random_basic_csr`` (``csr_mode=True``) -> :class:`CSRLinear`, ``actuallysparse.converter``
-> :mod:`utils.toolkits.sparse`.

Deliberate differences (checked below where they show):

* a stored entry is an active connection even if its value is 0: conversion keeps the
  effective mask (upstream drops every zero weight), and ``prune_smallest_values`` removes
  exactly the entries it pruned (upstream removes every stored zero);
* CSR layers train, and can be pruned with ``remove_zeros`` (upstream raises for CSR);
* ties in ``prune_smallest_values`` go to the lower storage index (upstream: ``argpartition``);
* new layers are initialised like ``nn.Linear`` with a full pattern (upstream: U(-1, 1) with
  |w| <= 0.2 dropped, bias U(0, 1));
* inputs must be (..., in); upstream also transposes an (in, batch) input.
"""
import math

import pytest
import torch
from torch import nn

from utils.toolkits.sparse import CSRLinear, SparseLinear, convert, convert_model

UPSTREAM = {"Linear": nn.Linear, "coo": SparseLinear, "csr": CSRLinear}
SPARSE = [SparseLinear, CSRLinear]
DATA = torch.tensor([[1., 2., 3.]])
PRUNE_WEIGHT = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5],
                             [0.6, 0.7, 0.8, 0.9, 1.0]])


def sparse_copy(cls, linear: nn.Linear) -> nn.Module:
    """A ``cls`` layer holding ``linear``'s weight and bias via ``assign_new_weight`` (as upstream tests do)."""
    layer = cls(linear.in_features, linear.out_features)
    layer.assign_new_weight(linear.weight.data, linear.bias.data)
    return layer


def blobs(n: int = 150, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 4) standardized features, (n,) labels of 3 Gaussian classes.

    Stands in for upstream's standardized Iris (4 features, 3 classes, 150 rows): scikit-learn,
    which upstream loads it from, is not a dependency here.
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 2 * torch.randn(3, 4, generator=g)[y] + torch.randn(n, 4, generator=g)
    return (x - x.mean(0)) / x.std(0), y


def loss_after(model: nn.Module, x, y, steps: int) -> tuple[float, float]:
    """Cross-entropy before and after ``steps`` full-batch Adam steps (lr 1e-3, upstream's loop)."""
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=0.001)
    with torch.no_grad():
        start = loss_fn(model(x), y).item()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        return start, loss_fn(model(x), y).item()


# ------------------------------------------------------------------ upstream tests/test_layers.py

@pytest.mark.parametrize("cls", SPARSE)
def test_initialization(cls):
    """Upstream ``test_initialization``: ``.weight`` is the sparse (out, in) tensor."""
    weight = cls(3, 4).weight
    assert weight.data.shape == (4, 3)
    assert weight.layout == (torch.sparse_coo if cls is SparseLinear else torch.sparse_csr)


@pytest.mark.parametrize("cls", SPARSE)
@pytest.mark.parametrize("size", [[1, 3], [3, 1], [2, 3], [3, 2]])
def test_forward_size(size, cls):
    """Upstream ``test_forward_size``: a 1-D (in,) input gives (1, out)."""
    layer = cls(size[0], size[1])
    data = torch.rand(size[0])
    out = layer(data)
    assert out.shape == (1, size[1])
    torch.testing.assert_close(out, layer(data[None]))


@pytest.mark.parametrize("cls", SPARSE)
def test_compare_linear(cls):
    """Upstream ``test_compare_linear`` (COO there; CSR too here)."""
    torch.manual_seed(0)
    linear = nn.Linear(3, 4)
    sparse = sparse_copy(cls, linear)
    assert linear(DATA).shape == sparse(DATA).shape == (1, 4)
    torch.testing.assert_close(linear(DATA), sparse(DATA))


def test_csr_backward():
    """Upstream ``test_csr_backward``, assertion inverted: upstream asserts ``values.grad is None``,
    true only on the old torch it ran on; on torch 2.13 its own CSR values get gradients, as ours do."""
    sparse = CSRLinear(3, 1)
    sparse(torch.tensor([1., 2., 3.])).backward()
    torch.testing.assert_close(sparse.values.grad, torch.tensor([1., 2., 3.]))
    torch.testing.assert_close(sparse.bias.grad, torch.tensor([1.]))


@pytest.mark.parametrize("cls", SPARSE)
@pytest.mark.parametrize("size", [[3, 1], [3, 2], [3, 4]])
def test_compare_linear_backward(size, cls):
    """Upstream ``test_compare_linear_backward``: ``values.grad`` (row-major) equals the dense grad."""
    torch.manual_seed(1)
    linear = nn.Linear(size[0], size[1])
    sparse = sparse_copy(cls, linear)
    linear(DATA).sum().backward()
    sparse(DATA).sum().backward()
    torch.testing.assert_close(sparse.values.grad.view(size[1], size[0]), linear.weight.grad)
    torch.testing.assert_close(sparse.bias.grad, linear.bias.grad)


@pytest.mark.parametrize("cls", SPARSE)
@pytest.mark.parametrize("k, tensor_after_pruning", [
    (0.1, torch.tensor([[0., 0.2, 0.3, 0.4, 0.5], [0.6, 0.7, 0.8, 0.9, 1.]])),
    (0.33, torch.tensor([[0., 0., 0., 0.4, 0.5], [0.6, 0.7, 0.8, 0.9, 1.]])),
    (0.5, torch.tensor([[0., 0., 0., 0., 0.], [0.6, 0.7, 0.8, 0.9, 1.]])),
])
def test_pruning(k, tensor_after_pruning, cls):
    """Upstream ``test_pruning``: ``assign_new_weight`` takes the transpose, k counts all in·out entries
    (floor(k·10) pruned).  CSR too here (upstream raises for CSR)."""
    sparse = cls(2, 5)
    sparse.assign_new_weight(PRUNE_WEIGHT)  # (in, out): transposed to the (5, 2) weight
    sparse.set_k(k)
    sparse.prune_smallest_values()
    torch.testing.assert_close(sparse.weight.t().to_dense(), tensor_after_pruning)
    assert sparse.nnz == 10 - math.floor(k * 10)


def test_pruning_reduce_size():
    """Upstream ``test_pruning_reduce_size``: pruned entries leave the storage."""
    sparse = SparseLinear(2, 5)
    sparse.assign_new_weight(PRUNE_WEIGHT)
    sparse.set_k(0.5)
    sparse.prune_smallest_values()
    assert len(sparse.weight.coalesce().values()) == 5
    assert sparse.indices.shape == (2, 5)


def test_pruning_grad_retention():
    """Upstream ``test_pruning_grad_retention``: pruning keeps ``requires_grad``."""
    sparse = SparseLinear(3, 5)
    sparse.values.requires_grad_(False)
    sparse.set_k(0.2)
    sparse.prune_smallest_values()
    assert not sparse.values.requires_grad and sparse.nnz == 12


def test_set_k_range_and_prune_without_removal():
    """Upstream ``set_k`` (k outside [0, 1] raises) and ``prune_smallest_values(remove_zeros=False)``
    (values zeroed, still stored); no upstream test."""
    sparse = SparseLinear(2, 5)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError):  # upstream raises a bare Exception, which a ValueError is
            sparse.set_k(bad)
    assert sparse.k == 0.05  # upstream default
    sparse.assign_new_weight(PRUNE_WEIGHT)
    sparse.set_k(0.3)
    sparse.prune_smallest_values(remove_zeros=False)
    assert sparse.nnz == 10
    torch.testing.assert_close(sparse.values, torch.tensor([0., 0.6, 0., 0.7, 0., 0.8, 0.4, 0.9, 0.5, 1.]))


def test_assign_new_weight_pattern_bias_and_errors():
    """Upstream ``assign_new_weight``: zeros dropped, bias replaced, shape checks; ``mask=`` is ours."""
    sparse = SparseLinear(3, 2)
    sparse.assign_new_weight(torch.tensor([[1., 0., 2.], [0., 0., 3.]]), torch.tensor([5., 6.]))
    assert sparse.nnz == 3 and sparse.indices.tolist() == [[0, 0, 1], [0, 2, 2]]
    torch.testing.assert_close(sparse(torch.ones(3)), torch.tensor([[8., 9.]]))
    sparse.assign_new_weight(torch.zeros(2, 3), mask=torch.ones(2, 3, dtype=torch.bool))
    assert sparse.nnz == 6 and sparse.bias.tolist() == [5., 6.]  # a stored zero is still an entry
    with pytest.raises(TypeError):
        sparse.assign_new_weight([[1.0]])
    with pytest.raises(ValueError):
        sparse.assign_new_weight(torch.ones(4, 4))
    with pytest.raises(ValueError):
        sparse.assign_new_weight(torch.ones(2, 3), torch.ones(3))

# Not ported: older upstream ``test_backward`` / an older ``test_pruning`` (``prune_smallest_values(k)``)
# target a superseded upstream API (``.weight`` as a Parameter with ``.grad``; k as an argument).


# ------------------------------------------------------------------ upstream tests/test_converter.py

@pytest.mark.parametrize("target", ["dense", "coo", "csr"])
@pytest.mark.parametrize("constructor", UPSTREAM)
def test_convert_range(constructor, target):
    """Upstream ``test_convert_range``: every source kind to every target, same outputs."""
    torch.manual_seed(2)
    original = UPSTREAM[constructor](3, 4)
    converted = convert(original, target)
    with torch.no_grad():
        torch.testing.assert_close(original(DATA), converted(DATA))


@pytest.mark.parametrize("size", [(3, 3), (3, 4)])
@pytest.mark.parametrize("target", ["dense", "coo", "csr"])
@pytest.mark.parametrize("constructor", UPSTREAM)
def test_convert_weights(constructor, target, size):
    """Upstream ``test_convert_weights``: ``.weight.to_dense()`` is kept by conversion."""
    original = UPSTREAM[constructor](*size)
    converted = convert(original, target)
    assert converted.weight.shape == (size[1], size[0])
    torch.testing.assert_close(original.weight.to_dense(), converted.weight.to_dense())


def test_unknown_target():
    """Upstream ``test_unknown_target``: a TypeError (ours is also a ValueError)."""
    with pytest.raises(TypeError):
        convert(nn.Linear(1, 1), "not_a_type")
    with pytest.raises(ValueError):
        convert(nn.Linear(1, 1), "not_a_type")


@pytest.mark.parametrize("conversion_target", ["dense", "coo", "csr"])
def test_convert_with_mask(conversion_target):
    """Upstream ``test_convert_with_mask``: the third positional argument is the mask."""
    mask = torch.tensor([[1., 0., 0.], [0., 0., 0.], [1., 1., 1.], [0., 0., 1.]])
    original = nn.Linear(3, 4)
    new = convert(original, conversion_target, mask)
    assert pytest.approx(0.) == new.weight.data[1, 1]
    assert original.weight.data[1, 1] != 0.
    torch.testing.assert_close(new.weight.to_dense(), original.weight.detach() * mask)
    if conversion_target != "dense":
        assert new.nnz == 5


def test_model_converter():
    """Upstream ``test_model_converter``: a sparse layer already there stays one."""
    model = nn.Sequential(nn.Linear(30, 5), nn.Linear(5, 4), SparseLinear(4, 1))
    model = convert_model(model, nn.Linear, "coo")
    assert all(type(child) is SparseLinear for child in model.children())


def test_model_converter_recursion():
    """Upstream ``test_model_converter_recursion``: nested containers are converted."""
    model = nn.Sequential(nn.Linear(30, 5),
                          nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 6), nn.Linear(6, 4)),
                          nn.Linear(5, 4), SparseLinear(4, 1))
    model = convert_model(model, nn.Linear, "coo")
    assert all(type(child) is SparseLinear for child in model[1].children())
    assert [layer.nnz for layer in model[1]] == [20, 24, 24]


@pytest.mark.parametrize("target", ["coo", "csr"])
def test_converted_model_forward(target):
    """Upstream ``test_converted_model_forward`` (COO there; CSR too here)."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 4), SparseLinear(4, 1))
    with torch.no_grad():
        output_dense = model(DATA)
        output_sparse = convert_model(model, nn.Linear, target)(DATA)
    torch.testing.assert_close(output_dense, output_sparse)


# ------------------------------------------------------------------ upstream tests/test_model.py

@pytest.mark.parametrize("l2", UPSTREAM)
@pytest.mark.parametrize("l1", UPSTREAM)
def test_model_improvement(l1, l2):
    """Upstream ``test_model_improvement`` (Linear x COO there; CSR too here): 100 Adam steps lower the loss."""
    torch.manual_seed(4)
    model = nn.Sequential(UPSTREAM[l1](4, 32), nn.Sigmoid(), UPSTREAM[l2](32, 3), nn.Softmax(dim=1))
    start, end = loss_after(model, *blobs(), steps=100)
    assert start - end >= 0.01


@pytest.mark.parametrize("target", ["coo", "csr"])
def test_training_after_convert(target):
    """Upstream ``test_training_after_convert`` (COO there): training goes on after conversion."""
    torch.manual_seed(5)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(4, 32), nn.Sigmoid(), nn.Linear(32, 3), nn.Softmax(dim=1))
    start, mid = loss_after(model, x, y, steps=50)
    model = convert_model(model, nn.Linear, target)
    mid_again, end = loss_after(model, x, y, steps=50)
    assert mid_again == pytest.approx(mid, abs=1e-6)
    assert start - mid >= 0.01 and mid - end >= 0.01


def test_pruning_mode():
    """Upstream ``test_pruning_mode``, with each layer's ``prune_smallest_values`` in place of its
    ``Pruner`` (not provided here), and the optimizer built after pruning: upstream's optimizer
    keeps the replaced ``values`` Parameters, so only the biases train there."""
    torch.manual_seed(6)
    x, y = blobs()
    model = nn.Sequential(SparseLinear(4, 64), nn.Sigmoid(), SparseLinear(64, 3), nn.Softmax(dim=1))
    for layer in (model[0], model[2]):
        layer.prune_smallest_values()  # k = 0.05: floor(12.8) = 12 and floor(9.6) = 9 entries
    assert [model[0].nnz, model[2].nnz] == [244, 183]
    start, end = loss_after(model, x, y, steps=100)
    assert model[0].values.requires_grad and model[0].nnz == 244
    assert start - end >= 0.01
