"""Library of sparse-network-analysis.

Layout (each a sub-package; nothing happens at import time)::

    utils.engine     datasets, the training loop (one run or K runs batched), seeding
    utils.runs       the runs store, configs and sweeps, run claims, launcher, thesis import/comparison
    utils.analysis   NNSTD, SaSD, MAED with neuron matching, convergent learning, structure, kernels
    utils.figures    every figure: one registry, one style table, the notebook builders
    utils.toolkits   seed toolkits matched to upstream APIs: graphs (deepstruct), sparse layers (ActuallySparse)
    utils.cli        ``python -m utils.cli`` (train, sweep, summary, import-thesis, compare-thesis, ...)

The one-call API::

    utils.setup()                                   # notebooks and scripts: one explicit call
    history = utils.train(model, "mnist", epochs=2)
    utils.save_run("runs/syn5", model, history)
    model, history, info, path = utils.load_run("runs/syn5")
    utils.analysis.network_distance(a, b, "nnstd")

``utils.train`` is the function; the engine module is ``utils.engine.train``.
"""
from utils import analysis
from utils.runs import results

from .api import load_run, probe_dataset, resolve_data, save_run, train
from .session import setup

__all__ = ["setup", "train", "save_run", "load_run", "resolve_data", "probe_dataset", "analysis", "results"]
