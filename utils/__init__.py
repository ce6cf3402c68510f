"""Library of sparse-network-analysis: data, training, runs store, analysis, plots, CLI.

The one-call API::

    history = utils.train(model, "mnist", epochs=2)
    utils.save_run("runs/syn5", model, history)
    model, history, info, path = utils.load_run("runs/syn5")
    utils.analysis.network_distance(a, b, "nnstd")

``utils.train`` is the function; the engine module stays importable as
``from utils.train import TrainConfig``.
"""
from . import analysis, results  # noqa: F401
from .api import load_run, probe_dataset, resolve_data, save_run, train  # noqa: F811

__all__ = ["train", "save_run", "load_run", "resolve_data", "probe_dataset", "analysis", "results"]
