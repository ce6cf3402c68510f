"""Batched FC training (utils.engine.batched): K runs in one process give the runs trained alone."""
import pytest
import torch

from models import build_model, get_masks
from models.masks import mask_of, raw_weight
from utils.engine.batched import StackedFC, train_batched
from utils.engine.train import TrainConfig
from utils.runs import results
from utils.runs.experiment import Overrides, RunSpec, execute, execute_batch, load_config, plan_tasks, run_settings

SPECS = [RunSpec("fc_mnist", "random", 0.5, 21, "thesis"), RunSpec("fc_mnist", "synflow", 0.1, 42, "thesis"),
         RunSpec("fc_mnist", "dense", 1.0, 63, "thesis")]
OVERRIDES = Overrides(epochs=1, train_subset=6000, test_subset=1000)


def test_stacked_forward_is_each_models_forward():
    torch.manual_seed(0)
    models = [build_model("fc") for _ in range(3)]
    x = torch.randn(3, 5, 784)
    out = StackedFC(models).forward(x)
    assert out.shape == (3, 5, 10)
    for k, model in enumerate(models):
        torch.testing.assert_close(out[k], model(x[k]), rtol=0, atol=1e-6)


def test_train_batched_rejects_mismatched_seeds():
    from utils.errors import UserError
    with pytest.raises(UserError, match="one seed per model"):
        train_batched([build_model("fc")], None, TrainConfig(), seeds=[21, 42])


@pytest.fixture(scope="module")
def alone_and_batched(real_data_dir, tmp_path_factory):
    config = load_config("fc_mnist")
    alone, batched = tmp_path_factory.mktemp("alone"), tmp_path_factory.mktemp("batched")
    for spec in SPECS:
        execute(spec, config, data_dir=str(real_data_dir), root=alone, overrides=OVERRIDES, progress=False)
    execute_batch(SPECS, config, data_dir=str(real_data_dir), root=batched, overrides=OVERRIDES, progress=False)
    return config, alone, batched


def test_a_batched_run_is_the_run_trained_alone(alone_and_batched):
    """Same init, same mask, same data order, same SGD: the weights agree to float32 accumulation
    order (measured: identical on one thread), the histories to the last digit of the loss sum."""
    _, alone, batched = alone_and_batched
    for spec in SPECS:
        a, b = (results.load_run(spec.experiment, spec.method, spec.density, spec.seed, root)
                for root in (alone, batched))
        for name, mask in get_masks(a.init_model()).items():
            assert torch.equal(mask, get_masks(b.init_model())[name])
        for (key, wa), wb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            torch.testing.assert_close(wb, wa, rtol=0, atol=1e-5, msg=key)
        assert b.history["top1"].tolist() == pytest.approx(a.history["top1"].tolist(), abs=0.1)
        assert b.history["train_loss"].iloc[-1] == pytest.approx(a.history["train_loss"].iloc[-1], rel=1e-5)
        assert a.info["compute"].get("batched") is None and b.info["compute"]["batched"] == 3
    # the three runs learned different things (nothing shared but the arithmetic)
    finals = [results.load_run(s.experiment, s.method, s.density, s.seed, batched).history["top1"].iloc[-1]
              for s in SPECS]
    assert len(set(finals)) == 3


def test_the_same_batched_command_is_byte_identical(alone_and_batched, real_data_dir, tmp_path):
    config, _, batched = alone_and_batched
    execute_batch(SPECS, config, data_dir=str(real_data_dir), root=tmp_path, overrides=OVERRIDES, progress=False)
    for spec in SPECS:
        first, second = (results.run_dir(spec.experiment, spec.method, spec.density, spec.seed, root)
                         for root in (batched, tmp_path))
        for name in ("final.safetensors", "init.safetensors"):
            assert (first / name).read_bytes() == (second / name).read_bytes()


def test_plan_groups_only_runs_that_train_alike():
    """Prune-then-train FC runs of one recipe are grouped (split evenly over the processes);
    methods that train themselves (Gem-Miner, DEEPR, DNW) and ResNet-20 runs go alone."""
    config = load_config("fc_mnist")
    specs = ([RunSpec("fc_mnist", m, d, s, "thesis") for m in ("synflow", "random") for d in (0.1, 0.5)
              for s in (21, 42, 63)] + [RunSpec("fc_mnist", "gem-miner", 0.1, 21, "thesis"),
                                        RunSpec("fc_mnist", "deepr", 0.1, 21, "thesis")])
    for spec in specs:
        run_settings(spec, config)
    tasks = plan_tasks(specs, config, jobs=2, batch_runs=8)
    assert [len(t) for t in tasks] == [6, 6, 1, 1]
    assert [t[0].method for t in tasks[2:]] == ["gem-miner", "deepr"]
    assert [len(t) for t in plan_tasks(specs, config, jobs=1, batch_runs=8)] == [8, 4, 1, 1]
    assert all(len(t) == 1 for t in plan_tasks(specs, config, jobs=2, batch_runs=1))
    resnet = load_config("resnet20_cifar10")
    assert [len(t) for t in plan_tasks([RunSpec("resnet20_cifar10", "random", 0.1, s, "cpu") for s in (21, 42)],
                                       resnet, jobs=1)] == [1, 1]


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_stacked_batches_are_each_runs_own_batches(name):
    """One gather for K runs gives run k exactly the batches ``batches()`` gives it alone (order,
    normalisation, the short last batch; CIFAR-10 augments per run)."""
    from utils.engine.batched import stacked_batches
    from utils.engine.data import DATASETS, Dataset, batches
    from utils.engine.seeding import generator
    info = DATASETS[name]
    x = torch.randint(0, 256, (70, *info.shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(70) % 10
    data = Dataset(info, x, y, x[:10], y[:10])
    seeds = [21, 42, 63]
    stacked = list(stacked_batches(data, 32, [generator(s, "data") for s in seeds]))
    assert [xb.shape for xb, _ in stacked] == [(3, 32, x[0].numel())] * 2 + [(3, 6, x[0].numel())]
    for k, seed in enumerate(seeds):
        alone = list(batches(x, y, 32, info, shuffle=True, generator=generator(seed, "data"), train_augment=True))
        for (xs, ys), (xa, ya) in zip(stacked, alone):
            assert torch.equal(xs[k], xa.flatten(1)) and torch.equal(ys[k], ya)


def test_masked_entries_get_no_update_and_keep_their_raw_value():
    """The stack trains effective weights; pruned entries stay zero in it and keep their raw value in the model."""
    import pruners
    models = [pruners.random(build_model("fc"), density=0.1, seed=s) for s in (1, 2)]
    before = [[raw_weight(layer).detach().clone() for layer in m.layers] for m in models]
    stack = StackedFC(models)
    optimizer = torch.optim.SGD(stack.parameters(), lr=0.5)
    loss = stack.forward(torch.randn(2, 8, 784)).square().sum()
    loss.backward()
    stack.mask_gradients()
    optimizer.step()
    for w, m in zip(stack.weights, stack.masks):
        assert torch.all(w[m == 0] == 0)
    stack.write_back(models)
    for model, raws in zip(models, before):
        for layer, raw in zip(model.layers, raws):
            pruned = ~mask_of(layer)
            assert torch.equal(raw_weight(layer)[pruned], raw[pruned])
            assert not torch.equal(raw_weight(layer)[~pruned], raw[~pruned])
