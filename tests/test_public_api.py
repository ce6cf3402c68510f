"""Every public name the README lists exists, so the README cannot drift from the code."""
import importlib
import re

from conftest import ROOT


def readme_api_names() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("Public API", 1)[1].split("\n\n", 2)[1]
    return re.findall(r"`((?:models|pruners|utils)\.[\w.]+)`", section)


def resolve(name: str):
    parts = name.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], 1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = importlib.import_module(".".join(parts[:i + 1]))
    return obj


def test_readme_lists_the_api_and_every_name_resolves():
    names = readme_api_names()
    assert {"utils.train", "pruners.synflow", "utils.save_run", "utils.load_run",
            "utils.analysis.network_distance", "models.fc"} <= set(names)
    for name in names:
        assert callable(resolve(name)), name


def test_public_functions_have_docstrings():
    for name in readme_api_names():
        assert (resolve(name).__doc__ or "").strip(), f"{name} has no docstring"


def test_readme_toolkit_snippet_runs():
    import networkx as nx

    import models
    from utils.toolkits import graphs, sparse
    model = models.fc()
    g = graphs.to_networkx(model)
    assert g.number_of_edges() == 119_400
    dag = graphs.layered_dag(nx.watts_strogatz_graph(200, 6, 0.1, seed=0))
    net = graphs.from_networkx(dag, input_size=784, output_size=10)
    assert net(__import__("torch").zeros(2, 784)).shape == (2, 10)
    assert not sparse.memory_report(sparse.convert_model(model, target="csr")).empty
