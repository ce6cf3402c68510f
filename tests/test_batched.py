"""Batched FC training (utils.engine.batched): K runs in one process give the runs trained alone."""
import copy

import pandas as pd
import pytest
import torch

from models import build_model, get_masks
from models.masks import mask_of, raw_weight
from utils.engine.batched import StackedFC, train_batched
from utils.engine.train import TrainConfig
from utils.runs import results
from utils.runs.experiment import Overrides, RunSpec, execute, execute_batch, load_config, run_settings
from utils.runs.sweep import plan_tasks

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
    if info.augment:
        return
    # normalised once (features) and per-run training sets give the same batches, bit for bit
    from utils.engine.batched import normalized_features
    own = [Dataset(info, x[k:k + 60], y[k:k + 60], x[:10], y[:10]) for k in range(3)]
    for datasets in ([data] * 3, own):
        plain = list(stacked_batches(datasets, 32, [generator(s, "data") for s in seeds]))
        cached = list(stacked_batches(datasets, 32, [generator(s, "data") for s in seeds],
                                      features=normalized_features(datasets)))
        assert len(plain) == len(cached) == (3 if datasets[0] is data else 2)
        for (xp, yp), (xc, yc) in zip(plain, cached):
            assert torch.equal(xp, xc) and torch.equal(yp, yc)
    for k, seed in enumerate(seeds):
        alone = list(batches(own[k].train_x, own[k].train_y, 32, info, shuffle=True,
                             generator=generator(seed, "data"), train_augment=True))
        for (xs, ys), (xa, ya) in zip(plain, alone):
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


def test_weight_decay_on_pruned_raw_entries_is_what_training_alone_applies():
    """Pruned raw entries get no gradient; weight decay (momentum 0.9, Nesterov) still shrinks
    them when a model trains alone.  The batched loop tracks that factor and applies it on
    write-back: every entry of every model, kept or pruned, matches training alone."""
    import pruners
    from utils.engine.data import DATASETS, Dataset
    from utils.engine.train import train
    info = DATASETS["mnist"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (96, *info.shape), dtype=torch.uint8, generator=gen)
    data = Dataset(info, x, torch.arange(96) % 10, x[:32], torch.arange(32) % 10)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    torch.manual_seed(0)
    start = [pruners.random(build_model("fc"), density=0.2, seed=s) for s in (1, 2)]
    with torch.no_grad():                      # pruned raw entries kept, as Gem-Miner keeps them
        for model in start:
            for layer in model.layers:
                raw_weight(layer).normal_(0, 0.05)
    alone, batched = copy.deepcopy(start), copy.deepcopy(start)
    for model, seed in zip(alone, (21, 42)):
        train(model, data, cfg, seed=seed, progress=False)
    train_batched(batched, data, cfg, seeds=[21, 42], progress=False)
    for s0, a, b in zip(start, alone, batched):
        for l0, la, lb in zip(s0.layers, a.layers, b.layers):
            pruned = ~mask_of(la)
            shrink = raw_weight(la)[pruned].abs().sum() / raw_weight(l0)[pruned].abs().sum()
            assert 0.5 < shrink < 0.999                        # decay moved the pruned entries
            torch.testing.assert_close(raw_weight(lb), raw_weight(la), rtol=0, atol=2e-6)


def test_gem_miner_finetunes_batched_equal_finetunes_alone(real_data_dir, tmp_path, monkeypatch):
    """A Gem-Miner FC run finetunes the mined net and its two sanity variants together (K = 3,
    recorded as ``finetunes_batched``); alone (``stackable`` off) every stored tensor and
    accuracy agrees to float32 accumulation order, the flagged-but-inactive weights included
    (the finetune's weight decay 1e-4 shrinks them in both)."""
    import utils.engine.batched as batched_module
    config = load_config("fc_mnist")
    spec = RunSpec("fc_mnist", "gem-miner", 0.1, 21, "thesis")
    overrides = Overrides(epochs=2, train_subset=15000, test_subset=1000)   # 10,000 train after the 5,000 val
    execute(spec, config, data_dir=str(real_data_dir), root=tmp_path / "batched", overrides=overrides, progress=False)
    monkeypatch.setattr(batched_module, "stackable", lambda models, cfg: False)
    execute(spec, config, data_dir=str(real_data_dir), root=tmp_path / "alone", overrides=overrides, progress=False)
    for name in ("gem-miner", "gem-miner-reinit", "gem-miner-shuffle"):
        b, a = (results.load_run("fc_mnist", name, 0.1, 21, tmp_path / root) for root in ("batched", "alone"))
        assert b.info["info"]["finetunes_batched"] == 3 and a.info["info"]["finetunes_batched"] == 1
        for (key, wa), wb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            torch.testing.assert_close(wb, wa, rtol=0, atol=1e-5, msg=f"{name} {key}")
        assert b.history["top1"].tolist() == pytest.approx(a.history["top1"].tolist(), abs=0.1)
        assert list(b.history.columns) == list(a.history.columns)
        assert b.history["phase"].tolist() == a.history["phase"].tolist()
        assert b.history["val_acc"].tolist() == pytest.approx(a.history["val_acc"].tolist(), abs=0.1, nan_ok=True)
        init = b.init_model()
        for layer, start in zip(b.model.layers, init.layers):            # the finetune trained
            kept = mask_of(layer)
            assert (raw_weight(layer)[kept] - raw_weight(start)[kept]).abs().max() > 1e-3


def train_alone_and_batched(specs, data_dir, root, overrides=OVERRIDES):
    """Store ``specs`` trained one by one under ``root/alone`` and together under ``root/batched``."""
    config = load_config("fc_mnist")
    for spec in specs:
        execute(spec, config, data_dir=str(data_dir), root=root / "alone", overrides=overrides, progress=False)
    execute_batch(specs, config, data_dir=str(data_dir), root=root / "batched", overrides=overrides, progress=False)


DNW_SPECS = [RunSpec("fc_mnist", "dnw", 0.05, 21, "thesis"), RunSpec("fc_mnist", "dnw", 0.1, 42, "thesis"),
             RunSpec("fc_mnist", "dnw", 0.1, 63, "thesis")]


def test_dnw_runs_batched_equal_dnw_runs_alone(real_data_dir, tmp_path):
    """DNW in the stack: each run keeps its own top-k per layer in every forward (two densities in
    one group), the gradient reaches every entry; weights, the final masks and the history
    (mask_changed included) equal training alone to float32 accumulation order."""
    train_alone_and_batched(DNW_SPECS, real_data_dir, tmp_path)
    for spec in DNW_SPECS:
        a, b = (results.load_run("fc_mnist", "dnw", spec.density, spec.seed, tmp_path / root)
                for root in ("alone", "batched"))
        assert b.info["compute"]["batched"] == 3
        for name, mask in get_masks(a.model).items():
            agree = (mask == get_masks(b.model)[name]).float().mean()
            assert agree > 0.9999, name                 # a flip needs two |w| within float noise
            assert torch.equal(get_masks(a.init_model())[name], get_masks(b.init_model())[name])
        for (key, wa), wb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            torch.testing.assert_close(wb, wa, rtol=0, atol=1e-5, msg=key)
        assert list(b.history.columns) == list(a.history.columns)
        assert b.history["top1"].tolist() == pytest.approx(a.history["top1"].tolist(), abs=0.1)
        assert b.history["mask_changed"].tolist() == pytest.approx(a.history["mask_changed"].tolist(),
                                                                    abs=1e-4, nan_ok=True)
        assert a.history["mask_changed"].iloc[-1] > 0                # the masks did move
    kept = [int(results.load_run("fc_mnist", "dnw", s.density, s.seed, tmp_path / "batched").model
                .layers[0].parametrizations.weight[0].mask.sum()) for s in DNW_SPECS]
    assert kept == [3929, 7840, 7840]             # round(d·78,400); the 5 % label is 10^-1.3


def test_plan_batches_dnw_runs_apart_from_prune_then_train_runs():
    config = load_config("fc_mnist")
    specs = DNW_SPECS + [RunSpec("fc_mnist", "random", 0.1, s, "thesis") for s in (21, 42)]
    tasks = plan_tasks(specs, config, jobs=1, batch_runs=8)
    assert [[s.method for s in t] for t in tasks] == [["dnw"] * 3, ["random"] * 2]


DEEPR_SPECS = [RunSpec("fc_mnist", "deepr", 0.05, 21, "thesis"), RunSpec("fc_mnist", "deepr", 0.2, 42, "thesis"),
               RunSpec("fc_mnist", "deepr", 0.2, 63, "thesis")]


def test_deepr_runs_batched_equal_deepr_runs_alone(real_data_dir, tmp_path):
    """DEEPR in the stack: W = s·relu(θ) per run, each run's Langevin noise and re-activations
    drawn from its own generator in its own order, its own budget (two densities in one group).
    Masks, init and history (connectivity, n_active) are bit for bit those of the runs trained
    alone (measured on one thread); the final weights agree to float rounding, because the stacked
    bmm sums in another order than a lone mm on CPUs without AVX-512 (seen on an AMD EPYC: a bias
    differed in its last bits)."""
    train_alone_and_batched(DEEPR_SPECS, real_data_dir, tmp_path)
    for spec in DEEPR_SPECS:
        a, b = (results.load_run("fc_mnist", "deepr", spec.density, spec.seed, tmp_path / root)
                for root in ("alone", "batched"))
        assert b.info["compute"]["batched"] == 3
        for name, mask in get_masks(a.model).items():
            assert torch.equal(mask, get_masks(b.model)[name]), name
            assert torch.equal(get_masks(a.init_model())[name], get_masks(b.init_model())[name])
        for (key, wa), wb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            torch.testing.assert_close(wb, wa, rtol=1e-5, atol=1e-6, msg=key)
        assert list(b.history.columns) == list(a.history.columns)
        assert b.history["top1"].tolist() == a.history["top1"].tolist()
        assert b.history["n_active"].tolist() == a.history["n_active"].tolist()
        assert b.info["info"] == a.info["info"] and b.info["info"]["nc"] == b.history["n_active"].iloc[0]
        assert b.info["files"]["init.safetensors"] == a.info["files"]["init.safetensors"]
    n_active = [results.load_run("fc_mnist", "deepr", s.density, s.seed, tmp_path / "batched").history["n_active"]
                for s in DEEPR_SPECS]
    # round(d·119,400) every epoch; the labels 5 % and 20 % are 10^-1.3 and 10^-0.695
    assert [set(h.tolist()) for h in n_active] == [{5984}, {24099}, {24099}]


GEM_SPECS = [RunSpec("fc_mnist", "gem-miner", 0.05, 21, "thesis"), RunSpec("fc_mnist", "gem-miner", 0.1, 42, "thesis"),
             RunSpec("fc_mnist", "gem-miner", 0.1, 63, "thesis")]


def test_gem_miner_runs_batched_equal_gem_miner_runs_alone(real_data_dir, tmp_path):
    """Gem-Miner in the stack: the runs mine their scores together (each its own validation
    split, score init, BottomK generator; one prune at epoch 2 of 3), then their nine finetunes
    (mined net, weight reinit, mask shuffle) train in stacks of 5 and 4.  Every stored net is bit
    for bit the one trained alone (one thread); the histories agree but for the timing and the last
    float32 digit of the losses (a per-run mean of per-image losses against one fused mean)."""
    train_alone_and_batched(GEM_SPECS, real_data_dir, tmp_path,
                            Overrides(epochs=3, train_subset=6000, test_subset=1000))
    for spec in GEM_SPECS:
        for name in ("gem-miner", "gem-miner-reinit", "gem-miner-shuffle"):
            a, b = (results.load_run("fc_mnist", name, spec.density, spec.seed, tmp_path / root)
                    for root in ("alone", "batched"))
            assert b.info["compute"]["batched"] == 3
            assert a.info["info"]["finetunes_batched"] == 3 and b.info["info"]["finetunes_batched"] == 5
            for file in ("final.safetensors", "init.safetensors"):
                assert b.info["files"][file] == a.info["files"][file], (name, spec, file)
            keep = [c for c in a.history.columns if c != "seconds"]
            assert list(b.history.columns) == list(a.history.columns)
            pd.testing.assert_frame_equal(b.history[keep], a.history[keep], check_exact=False, rtol=1e-6)
            exact = ["epoch", "phase", "density", "density_flag", "val_acc", "reg_loss"]
            assert b.history[exact].equals(a.history[exact]), (name, spec)
            assert {k: v for k, v in b.info["info"].items() if k != "finetunes_batched"} == \
                   {k: v for k, v in a.info["info"].items() if k != "finetunes_batched"}
        mined = results.load_run("fc_mnist", "gem-miner", spec.density, spec.seed, tmp_path / "batched")
        assert mined.info["info"]["prunes"] == 1 and mined.info["info"]["prune_epochs"] == [2]
        assert mined.history["phase"].tolist()[:3] == ["mining"] * 3
