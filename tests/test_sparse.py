"""utils.toolkits.sparse: real COO/CSR layers, conversion, memory report (ActuallySparse-like)."""
import copy

import pytest
import torch
from torch import nn

from models.fc import fc
from models.masks import get_masks, mask_of, prunable_layers, raw_weight, set_masks
from models.resnet import resnet20
from utils.toolkits.sparse import (
    CSRConv2d,
    CSRLinear,
    SparseConv2d,
    SparseLinear,
    convert,
    convert_model,
    memory_report,
)

DENSITIES = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)



def assert_same_outputs(model_a: nn.Module, model_b: nn.Module, x: torch.Tensor,
                        atol: float = 1e-5, rtol: float = 1e-5) -> None:
    """Both models (in eval mode, no grad) give the same outputs on ``x`` within tolerance."""
    model_a.eval()
    model_b.eval()
    with torch.no_grad():
        a, b = model_a(x), model_b(x)
    assert a.shape == b.shape
    err = (a - b).abs().max().item()
    assert torch.allclose(a, b, atol=atol, rtol=rtol), f"max |diff| = {err:.3g}"


def random_masks(model, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(layer.weight.shape, generator=g) < d for n, layer in prunable_layers(model).items()}


def masked(model_fn, d, seed=0, **kw):
    torch.manual_seed(seed)
    model = model_fn(**kw)
    set_masks(model, random_masks(model, d, seed))
    return model


def assert_same_masks_and_weights(a, b):
    ma, mb = get_masks(a), get_masks(b)
    assert ma.keys() == mb.keys()
    for name in ma:
        assert torch.equal(ma[name], mb[name]), name
        la, lb = prunable_layers(a)[name], prunable_layers(b)[name]
        assert torch.equal(la.weight.detach(), lb.weight.detach()), name  # effective weights
        assert (la.bias is None) == (lb.bias is None)
        if la.bias is not None:
            assert torch.equal(la.bias.detach(), lb.bias.detach())


# ------------------------------------------------------------------ FC

@pytest.mark.parametrize("d", DENSITIES)
def test_fc_outputs_identical_after_conversion(d):
    model = masked(fc, d, seed=int(d * 100))
    x = torch.randn(32, 1, 28, 28)
    for target, cls in (("coo", SparseLinear), ("csr", CSRLinear)):
        sparse = convert_model(model, nn.Linear, target)
        assert all(isinstance(layer, cls) for layer in sparse.layers)
        assert [layer.nnz for layer in sparse.layers] == [int(m.sum()) for m in get_masks(model).values()]
        assert_same_outputs(model, sparse, x)
        assert_same_outputs(model, sparse, torch.randn(1, 784))  # batch 1, flat input
    assert isinstance(model.layers[0], nn.Linear)  # the original is untouched (deep copy)


@pytest.mark.parametrize("target", ["coo", "csr"])
def test_round_trip_dense_sparse_dense(target):
    for kw in ({}, {"hidden_bias": False, "output_bias": True}):
        model = masked(fc, 0.1, seed=5, **kw)
        with torch.no_grad():  # an active entry with value 0 stays in the mask (masks, not weight != 0)
            j, i = get_masks(model)["layers.2"].nonzero()[0].tolist()
            raw_weight(model.layers[2])[j, i] = 0.0
        back = convert_model(convert_model(model, nn.Linear, target), nn.Linear, "dense")
        assert all(type(layer).__name__ == "ParametrizedLinear" for layer in back.layers)
        assert_same_masks_and_weights(model, back)
        assert get_masks(back)["layers.2"][j, i]
        assert_same_outputs(model, back, torch.randn(8, 784), atol=0, rtol=0)
        # and the dense result is a normal masked layer: masks can be changed as usual
        set_masks(back, {"layers.0": torch.zeros(100, 784, dtype=torch.bool)})
        assert back.layers[0].weight.abs().sum() == 0


def test_coo_gradients_match_masked_dense():
    model = masked(fc, 0.1, seed=7)
    sparse = convert_model(model, nn.Linear, "coo")
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    loss_fn = nn.functional.cross_entropy
    loss_fn(model(x), y).backward()
    loss_fn(sparse(x), y).backward()
    for dense_l, sparse_l in zip(model.layers, sparse.layers):
        g = raw_weight(dense_l).grad
        rows, cols = sparse_l.indices
        assert sparse_l.values.grad is not None
        assert torch.allclose(sparse_l.values.grad, g[rows, cols], atol=1e-6)
        if dense_l.bias is not None:
            assert torch.allclose(sparse_l.bias.grad, dense_l.bias.grad, atol=1e-6)

    back = convert_model(sparse, nn.Linear, "dense")
    assert all(torch.equal(a, b) for a, b in zip(get_masks(back).values(), get_masks(model).values()))


def test_coo_net_trains():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3))
    from models.masks import attach_masks
    attach_masks(net)
    set_masks(net, random_masks(net, 0.3))
    sparse = convert_model(net, nn.Linear, "coo")
    x = torch.randn(128, 20)
    y = (x[:, :3] * torch.tensor([1.0, -2.0, 0.5])).argmax(1)  # a learnable labelling
    loss_fn = nn.functional.cross_entropy
    indices = [sparse[0].indices.clone(), sparse[2].indices.clone()]
    opt = torch.optim.SGD(sparse.parameters(), lr=0.2, momentum=0.9)
    with torch.no_grad():
        loss0 = loss_fn(sparse(x), y).item()
    for _ in range(60):
        opt.zero_grad()
        loss_fn(sparse(x), y).backward()
        opt.step()
    with torch.no_grad():
        out = sparse(x)
    assert loss_fn(out, y).item() < 0.5 * loss0
    assert (out.argmax(1) == y).float().mean() > 0.8
    assert torch.equal(indices[0], sparse[0].indices) and torch.equal(indices[1], sparse[2].indices)
    back = convert_model(sparse, nn.Linear, "dense")  # trained weights back in the mask format
    assert torch.equal(get_masks(back)["0"], get_masks(net)["0"])
    assert_same_outputs(sparse, back, x)


def test_csr_trains_by_default_unless_frozen():
    # CSR trains like COO (as upstream ActuallySparse, whose CSR values are Parameters)
    model = masked(fc, 0.2)
    csr = convert_model(model, nn.Linear, "csr")
    assert all(p.requires_grad for p in csr.parameters())
    assert csr.layers[0].col_indices.dtype == torch.int32
    x = torch.randn(4, 784)
    csr(x).sum().backward()
    model(x).sum().backward()
    rows, cols = csr.layers[3]._rows_cols()
    torch.testing.assert_close(csr.layers[3].values.grad, raw_weight(model.layers[3]).grad[rows, cols])
    frozen = convert_model(model, nn.Linear, "csr", trainable=False)
    assert not any(p.requires_grad for p in frozen.parameters())


def test_state_dict_deepcopy_double():
    model = convert_model(masked(fc, 0.1), nn.Linear, "coo")
    clone = copy.deepcopy(model)
    x = torch.randn(3, 784)
    assert_same_outputs(model, clone, x, atol=0, rtol=0)
    fresh = convert_model(masked(fc, 0.1), nn.Linear, "coo")  # same pattern (same mask seed)
    fresh.load_state_dict(model.state_dict())
    assert_same_outputs(model, fresh, x, atol=0, rtol=0)
    double = copy.deepcopy(model).double()
    assert double.layers[0].values.dtype == torch.float64 and double.layers[0].indices.dtype == torch.int64
    assert_same_outputs(model.double(), double, x.double(), atol=1e-12, rtol=0)


# ------------------------------------------------------------------ conv

@pytest.mark.parametrize("cls", [SparseConv2d, CSRConv2d])
def test_single_conv_matches_masked_conv(cls):
    torch.manual_seed(0)
    for kw in (dict(kernel_size=3, stride=1, padding=1, bias=False),
               dict(kernel_size=(3, 5), stride=2, padding=(2, 1), dilation=(1, 2), bias=True),
               dict(kernel_size=1, stride=2, bias=False)):
        conv = nn.Conv2d(6, 5, **kw)
        from models.masks import attach_masks
        attach_masks(conv)
        set_masks(conv, {"": torch.rand(conv.weight.shape) < 0.3})
        sparse = convert(conv, cls.FORMAT)
        assert isinstance(sparse, cls) and sparse.nnz == int(mask_of(conv).sum())
        x = torch.randn(3, 6, 11, 9)
        assert_same_outputs(conv, sparse, x)
        assert torch.equal(convert(sparse, "dense").weight, conv.weight)
    # COO conv trains: gradients equal the masked dense gradients on the pattern
    sparse = convert(conv, "coo")
    conv(x).square().sum().backward()
    sparse(x).square().sum().backward()
    g = raw_weight(conv).grad.reshape(5, -1)
    rows, cols = sparse._rows_cols()
    assert torch.allclose(sparse.values.grad, g[rows, cols], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("d", [0.05, 0.5])
def test_resnet_outputs_identical_after_conversion(d):
    model = masked(resnet20, d, seed=1)
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    for target in ("coo", "csr"):
        sparse = convert_model(model, (nn.Linear, nn.Conv2d), target)
        assert not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in sparse.modules())
        assert_same_outputs(model, sparse, x)
        back = convert_model(sparse, (nn.Linear, nn.Conv2d), "dense")
        assert_same_masks_and_weights(model, back)
    only_fc = convert_model(model, nn.Linear, "csr")
    assert isinstance(only_fc.fc, CSRLinear) and type(only_fc.conv1).__name__ == "ParametrizedConv2d"


def test_unpruned_shortcut_stays_unpruned():
    model = masked(resnet20, 0.1, prune_shortcuts=False, fc_bias=False)
    back = convert_model(convert_model(model, nn.Conv2d, "csr"), nn.Conv2d, "dense")
    sc = back.blocks[3].shortcut[0]
    assert sc.prunable is False and "blocks.3.shortcut.0" not in prunable_layers(back)
    assert_same_masks_and_weights(model, back)
    assert_same_outputs(model, back, torch.randn(2, 3, 32, 32))


def test_errors():
    with pytest.raises(NotImplementedError):
        convert(nn.Conv2d(4, 4, 3, groups=2), "csr")
    with pytest.raises(ValueError):
        convert(nn.Linear(3, 3), "bsr")
    with pytest.raises(TypeError):
        convert(nn.ReLU(), "csr")


# ------------------------------------------------------------------ memory

def test_memory_report():
    model = masked(fc, 0.05)
    report = memory_report(model)
    assert list(report["layer"]) == [f"layers.{i}" for i in range(6)] + ["total"]
    nnz = [int(m.sum()) for m in get_masks(model).values()]
    assert report["nnz"].tolist() == nnz + [sum(nnz)]
    total = report.iloc[-1]
    assert total["dense_bytes"] == 4 * sum(layer.weight.numel() for layer in model.layers)
    assert total["masked_bytes"] == total["stored_bytes"] == 5 * total["numel"]
    assert total["csr_bytes"] < 0.15 * total["dense_bytes"] and total["coo_bytes"] > total["csr_bytes"]
    csr = memory_report(convert_model(model, nn.Linear, "csr"))
    assert (csr["stored_bytes"] == csr["csr_bytes"]).all()
    assert csr["nnz"].tolist() == report["nnz"].tolist()
    coo = memory_report(convert_model(model, nn.Linear, "coo"))
    assert (coo["stored_bytes"] == coo["coo_bytes"]).all()
    res = memory_report(masked(resnet20, 0.1))
    assert len(res) == 23 and res.iloc[-1]["density"] == pytest.approx(0.1, abs=0.01)
