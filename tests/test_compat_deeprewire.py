"""DeepRewire compatibility: its tests ported to ``pruners.deepr``, plus its observable behaviours.

Upstream: github.com/LuggiStruggi/DeepRewire (``deep_rewire`` package), tests in
``tests/converter.py``, ``tests/deepr.py``, ``tests/softdeepr.py`` and
``tests/softdeeprwrapper.py`` on the models of ``tests/models.py`` (FCN, CNN below);
its older ``tests/test_*.py`` are earlier versions of the same tests.
Each test names the upstream test (or, for a behaviour without a test, the upstream
function) it mirrors.  Upstream's assertions are kept where they are the point (e.g. the
loss thresholds) and made exact where upstream only bounds a value.

Upstream's fitting thresholds were checked against deep_rewire 1.0.5 itself (same
models, seeds 0-3, CPU): where upstream misses its own threshold, the port says so and
asserts what upstream's code does reach.
"""
# Left out:
# tests/{deepr,softdeepr,softdeeprwrapper}.py::test_training_time: timing; on a shared CPU it tests the machine.
# tests/softdeeprwrapper.py::test_overfitting_small_batch[SGD]: upstream bug, SGD's default lr 1e-3 loses to L1 and
#   the loss rises above the first one, with upstream's code the same (identical losses, checked).
import copy
import importlib
import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrize

from pruners import DEEPR, NonTrainableParameter, SoftDEEPR, SoftDEEPRWrapper, convert, measure_sparsity, reconvert

# the module, not the ``pruners.deepr`` one-call function that shadows it as a package attribute
deepr_module = importlib.import_module("pruners.deepr")
BIAS_MODES = ["ignore", "as_connections", "second_bias"]


class FCN(nn.Module):
    """Upstream tests/models.py FCN: 784-512-256-10, no biases, dropout 0.2."""

    def __init__(self):
        super().__init__()
        self.input_shape, self.output_shape = (28 * 28,), (10,)
        self.fc1 = nn.Linear(28 * 28, 512, bias=False)
        self.fc2 = nn.Linear(512, 256, bias=False)
        self.fc3 = nn.Linear(256, 10, bias=False)
        self.dropout = nn.Dropout(0.2)

    def forward(self, x):
        x = self.dropout(torch.relu(self.fc1(x.view(-1, 28 * 28))))
        x = self.dropout(torch.relu(self.fc2(x)))
        return self.fc3(x)


class CNN(nn.Module):
    """Upstream tests/models.py CNN: two 3×3 convs with pooling, then 4096-512-10, all with biases."""

    def __init__(self):
        super().__init__()
        self.input_shape, self.output_shape = (3, 32, 32), (10,)
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.fc1 = nn.Linear(64 * 8 * 8, 512)
        self.fc2 = nn.Linear(512, 10)
        self.dropout = nn.Dropout(0.25)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = self.dropout(torch.relu(self.fc1(x.view(-1, 64 * 8 * 8))))
        return self.fc2(x)


MODELS = [FCN, CNN]
LAYERS = {FCN: ["fc1", "fc2", "fc3"], CNN: ["conv1", "conv2", "fc1", "fc2"]}


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def sample(model, n=1):
    """Random (input, target) pair shaped for ``model``: (n, *input_shape), (n, *output_shape)."""
    return torch.randn(n, *model.input_shape), torch.randn(n, *model.output_shape)


def layers(model):
    return {name: model.get_submodule(name) for name in LAYERS[type(model)]}


def weight_count(model_class):
    return sum(m.weight.numel() for m in layers(model_class()).values())


def effective_forward(standard, model, x):
    """``standard`` (an unconverted copy) run on ``model``'s effective weights and biases."""
    tensors = {}
    for name, layer in layers(model).items():
        tensors[f"{name}.weight"] = layer.weight
        if layer.bias is not None:
            tensors[f"{name}.bias"] = layer.bias
    return functional_call(standard, tensors, (x,))


def dormant_count(model):
    """Entries with θ ≤ 0 over the converted weights."""
    return sum(int((deepr_module.raw_weight(m) <= 0).sum()) for m in layers(model).values())


def assert_plain(model, standard):
    """A reconverted model is plain PyTorch again: no parametrization, the standard state-dict keys."""
    for layer in layers(model).values():
        assert not parametrize.is_parametrized(layer)
        assert type(layer) in (nn.Linear, nn.Conv2d)
    assert list(model.state_dict()) == list(standard.state_dict())     # same keys, same order


def train(model, optimizer, steps=100, n=10):
    """Fit a fixed random batch (upstream's overfitting loop); returns the per-step losses."""
    x, y = sample(model, n)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


# --------------------------------------------------------------------------- converter
def test_non_trainable_parameter():
    """Mirrors tests/converter.py::test_non_trainable_parameter."""
    param = NonTrainableParameter(torch.tensor([1.0, 2.0, 3.0]))
    assert param.requires_grad is False
    param.requires_grad = True
    assert param.requires_grad is False
    param.requires_grad = False
    assert param.requires_grad is False
    assert torch.equal(param, torch.tensor([1.0, 2.0, 3.0]))
    holder = nn.Module()
    holder.register_parameter("signs", param)
    holder.requires_grad_(True)
    assert [n for n, p in holder.named_parameters() if p.requires_grad] == []


@pytest.mark.parametrize("model_class", MODELS)
@pytest.mark.parametrize("handle_biases", BIAS_MODES)
def test_forward_pass_and_loss(model_class, handle_biases):
    """Mirrors tests/converter.py::test_forward_pass and ::test_loss_calculation."""
    model = model_class().eval()
    standard = copy.deepcopy(model)
    convert(model, handle_biases=handle_biases)
    for layer in layers(model).values():
        signs = layer.parametrizations.weight[0].weight_signs
        assert torch.equal(layer.weight, torch.relu(deepr_module.raw_weight(layer)) * signs)
    x, y = sample(model)
    output = model(x)
    assert output.shape == (1, *model.output_shape)
    assert torch.equal(output, effective_forward(standard, model, x))
    loss = nn.functional.mse_loss(output, y)
    assert loss.item() == nn.functional.mse_loss(effective_forward(standard, model, x), y).item()


@pytest.mark.parametrize("model_class", MODELS)
def test_parameters(model_class):
    """Mirrors tests/converter.py::test_parameters (state-dict keys and sparsity around a round trip)."""
    model = model_class()
    standard = copy.deepcopy(model)
    convert(model)
    names = LAYERS[model_class]
    converted = {f"{n}.parametrizations.weight.{k}" for n in names for k in ("original", "0.weight_signs")}
    if model_class is CNN:      # second_bias: b⁺ is the original, b⁻ the parametrization's parameter
        converted |= {f"{n}.parametrizations.bias.{k}" for n in names for k in ("original", "0.negative")}
    assert set(model.state_dict()) == converted
    n_dormant = dormant_count(model)
    reconvert(model)
    assert_plain(model, standard)
    total = sum(p.numel() for p in standard.parameters())
    assert measure_sparsity(standard.parameters()) == 0.0
    # a second_bias bias relu(b) − relu(−b) = b is never 0, so the zeros are the dormant weights
    assert measure_sparsity(model.parameters()) == n_dormant / total
    assert 0.45 < n_dormant / total < 0.55          # random signs: about half the weights dormant


@pytest.mark.parametrize("model_class", MODELS)
@pytest.mark.parametrize("handle_biases", BIAS_MODES)
def test_reconversion(model_class, handle_biases):
    """Mirrors tests/converter.py::test_reconversion (outputs bit-identical across reconvert)."""
    for _ in range(2):
        model = model_class().eval()
        standard = copy.deepcopy(model)
        convert(model, handle_biases=handle_biases)
        x = torch.rand(1, *model.input_shape)
        with torch.no_grad():
            before = model(x)
            assert reconvert(model) is model
            after = model(x)
        assert torch.equal(before, after)
        assert_plain(model, standard)


@pytest.mark.parametrize("model_class", MODELS)
@pytest.mark.parametrize("handle_biases", BIAS_MODES)
def test_conversion(model_class, handle_biases):
    """Mirrors tests/converter.py::test_conversion (keep_signs preserves the function exactly)."""
    for _ in range(2):
        model = model_class().eval()
        x = torch.rand(1, *model.input_shape)
        with torch.no_grad():
            before = model(x)
            convert(model, handle_biases=handle_biases, keep_signs=True)
            after = model(x)
        assert torch.equal(before, after)
        assert dormant_count(model) == 0


@pytest.mark.parametrize("model_class", MODELS)
@pytest.mark.parametrize("handle_biases", BIAS_MODES)
def test_active_probability(model_class, handle_biases):
    """Mirrors tests/converter.py::test_active_probability (connectivity = 1 − sparsity after reconvert).

    Upstream averages 10 models per value within ±0.001; here one seeded draw per value,
    exact at 0 and 1 and within 5 binomial standard deviations in between.
    """
    n_weights = weight_count(model_class)
    for connectivity in (0.0, 0.3, 0.7, 1.0):
        model = model_class()
        n_bias = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
        convert(model, handle_biases=handle_biases, active_probability=connectivity,
                generator=torch.Generator().manual_seed(1))
        reconvert(model)
        rewired = n_weights + (n_bias if handle_biases == "as_connections" else 0)
        zeros = measure_sparsity(model.parameters()) * (n_weights + n_bias)
        expected = (1 - connectivity) * rewired
        if connectivity in (0.0, 1.0):
            assert zeros == pytest.approx(expected, abs=1e-6)
        else:
            sd = (connectivity * (1 - connectivity) * rewired) ** 0.5
            assert abs(zeros - expected) < 5 * sd


# --------------------------------------------------------------------------- DEEPR
def deepr_setup(model_class, connectivity, lr=0.05, l1=0.005):
    """Upstream's DEEPR set-up: nc from the unconverted parameter count, all parameters to DEEPR."""
    model = model_class()
    nc = int(sum(p.numel() for p in model.parameters()) * connectivity)
    convert(model)
    return model, nc, DEEPR(model.parameters(), nc=nc, lr=lr, l1=l1)


def active_counts(optimizer):
    """(#θ > 0, #θ ≥ 0) over the optimizer's tensors; upstream's check counts θ ≥ 0."""
    tensors = [p for g in optimizer.param_groups for p in g["params"]]
    return sum(int((p > 0).sum()) for p in tensors), sum(int((p >= 0).sum()) for p in tensors)


def test_number_of_connections_init():
    """Mirrors tests/deepr.py::test_number_of_connections_init."""
    model, nc, optimizer = deepr_setup(FCN, 0.3)
    assert nc == 160_512
    assert active_counts(optimizer) == (nc, nc)
    reconvert(model)
    assert sum(int(torch.count_nonzero(p)) for p in model.parameters()) == nc


def test_number_of_connections_step():
    """Mirrors tests/deepr.py::test_number_of_connections_step."""
    model, nc, optimizer = deepr_setup(FCN, 0.3)
    x, y = sample(model)
    nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()
    assert optimizer.last_reactivated > 0
    assert active_counts(optimizer) == (nc, nc)
    reconvert(model)
    assert sum(int(torch.count_nonzero(p)) for p in model.parameters()) == nc


def check_gradients(model):
    """Every parameter has a gradient of its shape, 0 on dormant weights; the signs are buffers."""
    assert not [n for n, _ in model.named_parameters() if "sign" in n]
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.shape == param.shape, name
    for layer in layers(model).values():
        theta = deepr_module.raw_weight(layer)
        assert torch.all(theta.grad[theta <= 0] == 0)
        signs = layer.parametrizations.weight[0].weight_signs
        assert not signs.requires_grad and signs.grad is None


@pytest.mark.parametrize("model_class", MODELS)
def test_deepr_backward_pass(model_class):
    """Mirrors tests/deepr.py::test_backward_pass."""
    model, _, _ = deepr_setup(model_class, 0.3)
    x, y = sample(model)
    nn.functional.mse_loss(model(x), y).backward()
    check_gradients(model)


def signs_of(model):
    return {n: m.parametrizations.weight[0].weight_signs.clone() for n, m in layers(model).items()}


def assert_all_changed(model, before, signs):
    """Every parameter moved; the signs did not."""
    for name, param in model.named_parameters():
        assert not torch.equal(before[name], param), name
    for name, s in signs_of(model).items():
        assert torch.equal(signs[name], s)


def step_and_check_changed(model, optimizer, *, check_grads: bool) -> dict:
    """One MSE step on a random sample (upstream's backward-pass tests): every parameter gets a
    gradient (if ``check_grads``) and changes. Returns the parameters before the step."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    signs = signs_of(model)
    x, y = sample(model)
    nn.functional.mse_loss(model(x), y).backward()
    if check_grads:
        check_gradients(model)
    optimizer.step()
    assert_all_changed(model, before, signs)
    return before


@pytest.mark.parametrize("model_class", MODELS)
def test_deepr_parameter_updates(model_class):
    """Mirrors tests/deepr.py::test_parameter_updates; also: dormant entries move only when re-activated."""
    model, nc, optimizer = deepr_setup(model_class, 0.3)
    before = step_and_check_changed(model, optimizer, check_grads=False)
    reset = optimizer.defaults["reset_val"]
    for name, param in model.named_parameters():
        dormant = before[name] <= 0
        moved = dormant & (param != before[name])
        assert torch.all(param[moved] == reset), name
    assert active_counts(optimizer)[0] == nc


@pytest.mark.parametrize("model_class", MODELS)
def test_deepr_overfitting_small_batch(model_class):
    """Mirrors tests/deepr.py::test_overfitting_small_batch at lr 0.05 instead of 0.6.

    At lr 0.6 upstream's own DEEPR diverges (loss NaN by step 10, then its re-activation
    loop never ends); at 0.05, with the default temp lr/210, it goes from 1.1 to 0.21 (FCN)
    and from 0.82 to 0.44 (CNN) in 100 steps, far from upstream's < 0.05.  Asserted: the
    loss never exceeds the first and falls ≥ 1.5× while exactly nc connections stay
    active (70 % sparse).
    """
    model, nc, optimizer = deepr_setup(model_class, 0.3, lr=0.05, l1=0.0005)
    losses = train(model, optimizer)
    assert max(losses) == losses[0] and losses[-1] < losses[0] / 1.5
    assert active_counts(optimizer)[0] == nc
    active_weights = sum(int((deepr_module.raw_weight(m) > 0).sum()) for m in layers(model).values())
    reconvert(model)
    assert sum(int(torch.count_nonzero(m.weight)) for m in layers(model).values()) == active_weights
    if model_class is FCN:      # only weights: the reconverted net has exactly nc nonzero entries
        assert active_weights == nc
        assert measure_sparsity(model.parameters()) == pytest.approx(0.7, abs=1e-12)   # nc = 0.3·N exactly


# --------------------------------------------------------------------------- SoftDEEPR
@pytest.mark.parametrize("model_class", MODELS)
def test_softdeepr_backward_pass(model_class):
    """Mirrors tests/softdeepr.py::test_backward_pass; also: no entry below min_weight = −3·l1."""
    model = model_class()
    convert(model)
    optimizer = SoftDEEPR(model.parameters(), lr=0.05, l1=0.005)
    step_and_check_changed(model, optimizer, check_grads=True)
    assert all(bool((p >= -3 * 0.005).all()) for p in model.parameters())


@pytest.mark.parametrize("model_class", MODELS)
def test_softdeepr_overfitting_small_batch(model_class):
    """Mirrors tests/softdeepr.py::test_overfitting_small_batch (> 70 % sparse), loss < 0.15 not < 0.05.

    Upstream's own SoftDEEPR ends at 0.067, 0.030, 0.030 (FCN, seeds 0-2) and 0.12-0.15,
    0.08-0.09 (CNN, seeds 0-1, by thread count), so < 0.05 fails for upstream too; ours
    ends at 0.03-0.10.
    """
    model = model_class()
    convert(model)
    optimizer = SoftDEEPR(model.parameters(), lr=0.6, l1=0.0005)
    losses = train(model, optimizer)
    assert losses[-1] < 0.15
    converted = measure_sparsity(model)         # counts θ ≤ 0, DeepRewire's rule
    reconvert(model)
    assert measure_sparsity(model.parameters()) == converted
    assert converted > 0.7


# --------------------------------------------------------------------------- SoftDEEPRWrapper
OPTIMIZERS = [torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW]


@pytest.mark.parametrize("model_class", MODELS)
@pytest.mark.parametrize("optim_class", OPTIMIZERS)
def test_wrapper_backward_pass(model_class, optim_class):
    """Mirrors tests/softdeeprwrapper.py::test_backward_pass; also: dormant gradients are zeroed."""
    model = model_class()
    convert(model)
    optimizer = SoftDEEPRWrapper(model.parameters(), optim_class, lr=0.05, l1=0.005)
    assert isinstance(optimizer.base_optim, optim_class)
    assert optimizer.base_optim.param_groups[0]["lr"] == 0.05
    before = step_and_check_changed(model, optimizer, check_grads=True)
    for name, param in model.named_parameters():
        assert torch.all(param.grad[before[name] <= 0] == 0), name
        assert bool((param >= -3 * 0.005).all())


@pytest.mark.parametrize("model_class", MODELS)
@pytest.mark.parametrize("optim_class", [torch.optim.Adam, torch.optim.AdamW])   # SGD: see the module doc
def test_wrapper_overfitting_small_batch(model_class, optim_class):
    """Mirrors tests/softdeeprwrapper.py::test_overfitting_small_batch (loss never above the first, > 50 % sparse)."""
    model = model_class()
    convert(model, active_probability=0.2)
    optimizer = SoftDEEPRWrapper(model.parameters(), optim_class, l1=0.05)
    assert optimizer.defaults["temp"] == pytest.approx(0.005 * 0.05 ** 2 / 18)   # lr 0.005 by default
    losses = train(model, optimizer)
    assert max(losses) <= losses[0]
    converted = measure_sparsity(model)
    reconvert(model)
    assert measure_sparsity(model.parameters()) == converted
    assert converted > 0.5


# --------------------------------------------------------------------------- upstream behaviours
def test_convert_groups_signs_in_neither():
    """Mirrors deep_rewire/convert.py::convert's return: weights (and rewired biases) first, signs in
    neither list; unlike upstream, b⁻ of ``second_bias`` is returned (upstream never trains it)."""
    model = CNN()
    rewireable, other = convert(model)
    expected = []
    for layer in layers(model).values():
        expected += [layer.parametrizations.weight.original, layer.parametrizations.bias.original,
                     layer.parametrizations.bias[0].negative]
    assert [id(p) for p in rewireable] == [id(p) for p in expected]
    assert other == []
    sign_ids = {id(m.parametrizations.weight[0].weight_signs) for m in layers(model).values()}
    assert not sign_ids & {id(p) for p in model.parameters()}
    model = CNN()
    rewireable, other = convert(model, handle_biases="ignore")
    assert [id(p) for p in other] == [id(m.bias) for m in layers(model).values()]
    assert len(rewireable) == 4
    model = CNN()
    rewireable, _ = convert(model, handle_biases="as_connections")
    assert [tuple(p.shape) for p in rewireable[:2]] == [(32, 3, 3, 3), (32,)]
    assert not model.conv1.parametrizations.bias[0].bias_signs.requires_grad


@pytest.mark.parametrize("handle_biases", BIAS_MODES)
def test_convert_twice(handle_biases):
    """Mirrors deep_rewire/convert.py::convert on a converted model (accepted, converted again);
    here from the current effective weights, so keep_signs keeps the function."""
    model = CNN().eval()
    rewireable, _ = convert(model, handle_biases=handle_biases)
    keys = list(model.state_dict())
    x = torch.rand(2, *model.input_shape)
    with torch.no_grad():
        before = model(x)
    again, other = convert(model, handle_biases=handle_biases, keep_signs=True)
    with torch.no_grad():
        assert torch.equal(model(x), before)
    assert list(model.state_dict()) == keys
    assert all(len(m.parametrizations.weight) == 1 for m in layers(model).values())
    assert again[0] is rewireable[0]             # same θ object: optimizers stay valid
    assert len(again) == len(rewireable) and len(other) == (4 if handle_biases == "ignore" else 0)
    convert(model, handle_biases="ignore")      # a different bias mode on the second call
    assert not parametrize.is_parametrized(model.fc1, "bias")


def test_reset_val_zero_warns_once_and_keeps_the_budget(monkeypatch):
    """Mirrors deep_rewire/optim.py::DEEPR's default reset_val=0.0 (accepted with a warning;
    re-activated entries sit at the dtype's smallest positive value, so exactly nc stay active)."""
    monkeypatch.setattr(importlib.import_module("pruners.deepr_optim"), "_warned_zero_reset", False)
    lin = nn.Linear(30, 20, bias=False)
    (theta,), _ = convert(lin)
    with pytest.warns(UserWarning, match="reset_val=0"):
        optimizer = DEEPR([theta], nc=100, lr=0.1, l1=0.01, reset_val=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # once per process: no second warning
        DEEPR([theta], nc=100, reset_val=0.0)
    tiny = torch.finfo(torch.float32).tiny
    for _ in range(30):
        before = theta.detach().clone()
        theta.grad = torch.randn_like(theta)
        optimizer.step()
        assert int((theta > 0).sum()) == 100
        revived = (before <= 0) & (theta != before)
        assert torch.all(theta[revived] == tiny)
    assert optimizer.last_reactivated > 0
    lin64 = nn.Linear(30, 20, bias=False).double()
    (theta64,), _ = convert(lin64)
    optimizer = DEEPR([theta64], nc=100, reset_val=0.0)
    assert optimizer._reset_value(theta64) == torch.finfo(torch.float64).tiny
    with pytest.raises(ValueError):
        DEEPR([theta], nc=100, reset_val=-1.0)


def test_measure_sparsity():
    """Mirrors deep_rewire/utils.py::measure_sparsity (tensor, list, module, threshold)."""
    assert measure_sparsity(torch.tensor([0.0, 1.0, 0.0, 2.0])) == 0.5
    assert measure_sparsity([torch.zeros(2, 3), torch.tensor([0.0, 1.0])]) == 0.875
    assert measure_sparsity(torch.tensor([0.05, -0.2, 1.0, 0.0]), threshold=0.1) == 0.5
    lin = nn.Linear(4, 5, bias=False)
    convert(lin, generator=torch.Generator().manual_seed(0))
    theta = lin.parametrizations.weight.original
    assert measure_sparsity(lin) == int((theta <= 0).sum()) / 20      # converted: θ ≤ 0 is a zero
    assert measure_sparsity(lin) == measure_sparsity(reconvert(lin))
    with pytest.raises(ValueError):
        measure_sparsity([])
