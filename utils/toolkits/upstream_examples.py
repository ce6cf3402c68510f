"""The README example of each seed library, run against this project's API.

Each function is the upstream example with only its import line changed (and deepstruct's class
names, which map one to one); it returns what the example prints.  Every remaining difference
from upstream is listed, with its reason, in ``pruners/README.md`` (*Compatibility*).

>>> print(deepstruct_example())
"""
from __future__ import annotations


def deepstruct_example() -> str:
    """deepstruct README: a masked DAN built on a random small-world structure, and its graph."""
    import networkx as nx
    import torch

    from utils.toolkits.graphs import from_networkx, graph_stats, to_networkx

    random_graph = nx.newman_watts_strogatz_graph(100, 4, 0.5, seed=0)
    structure = nx.DiGraph()  # deepstruct.graph.CachedLayeredGraph(): edges as listed, low -> high node id
    structure.add_edges_from(random_graph.edges)
    structure.add_nodes_from(random_graph.nodes)
    model = from_networkx(structure, (28, 28), 10)  # deepstruct.sparse.MaskedDeepDAN((28, 28), 10, structure)
    shape = model(torch.rand(8, 28, 28)).shape  # torch.Size([8, 10])
    g = to_networkx(model)  # model.generate_structure(include_input=True, include_output=True)
    return f"{shape}\n{g.number_of_nodes()} {g.number_of_edges()} {graph_stats(g)['dead_hidden']}"  # 894 1086 0


def deeprewire_example() -> str:
    """DeepRewire README (*Usage*): convert, Soft-DEEPR optimiser, reconvert to a plain model.

    The README's optional ``optim2 = torch.optim.SGD(other_params, ...)`` is left out: for this
    model ``other_params`` is empty and torch rejects an empty optimizer, with upstream as with us.
    """
    import torch

    from pruners import SoftDEEPR, convert, reconvert

    model = torch.nn.Sequential(
        torch.nn.Linear(784, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 10)
    )
    # Convert model parameters to rewireable form
    rewireable_params, other_params = convert(model)
    optim1 = SoftDEEPR(rewireable_params, lr=0.05, l1=1e-5)
    # ... Standard training loop ...
    reconvert(model)
    # Model has the same parameters but is now (hopefully) sparse.
    return f"{type(model[0].weight).__name__} {sorted(model[0].state_dict())}; optimiser {type(optim1).__name__}"


def actuallysparse_example() -> str:
    """ActuallySparse README (*Convert layers*): a Linear layer converted to a COO sparse layer."""
    from torch import nn

    from utils.toolkits.sparse import convert  # upstream: from actuallysparse.converter import convert

    fc1 = nn.Linear(4, 4)
    fc1_sparse = convert(fc1, "coo")
    return f"{fc1}\n{fc1_sparse}"
