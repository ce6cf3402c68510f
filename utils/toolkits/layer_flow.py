"""Data flow between the layers of a model: which layer's units feed which layer's inputs.

Used by :func:`utils.toolkits.graphs.to_networkx`.  A *flow* is ``(order, feeds, out_feeds, n_input)``:
``order`` the layer names (qualified, as in ``model.named_modules()``) in execution order,
``feeds[name]`` a list of ``(source, offset, reshaped)`` with source a layer name or
:data:`INPUT`, ``out_feeds`` the same for the model output, and ``n_input`` the number of
input units when known (else ``None``).  Layers are Linear/Conv2d (dense, masked or
:mod:`utils.toolkits.sparse`); everything else between them is followed by tracing with ``torch.fx``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from models.masks import mask_of

INPUT = "input"


def is_layer(module: nn.Module) -> bool:
    """Linear/Conv2d, dense or masked, or a :mod:`utils.toolkits.sparse` layer: the units of a graph."""
    from utils.toolkits.sparse import is_sparse_layer
    return isinstance(module, (nn.Linear, nn.Conv2d)) or is_sparse_layer(module)


def layer_view(module: nn.Module) -> tuple[Tensor, Tensor, Tensor | None, str]:
    """(effective weight, bool mask, bias, kind) of a dense, masked or sparse layer.

    Weight and mask are (out, in) or (out, in, kh, kw) on the CPU; kind is "linear"/"conv".
    """
    from utils.toolkits.sparse import is_sparse_layer
    if is_sparse_layer(module):
        weight, mask = module.dense_weight(), module.dense_mask()
        kind = "conv" if len(module.weight_shape) == 4 else "linear"
    else:
        weight, mask = module.weight, mask_of(module)
        kind = "conv" if isinstance(module, nn.Conv2d) else "linear"
    bias = getattr(module, "bias", None)
    return weight.detach().cpu() * mask.cpu(), mask.detach().cpu().bool(), \
        None if bias is None else bias.detach().cpu(), kind


def in_units(module: nn.Module) -> int:
    """Input features (Linear) or input channels (conv) of a layer."""
    return layer_shape(module)[1]


def layer_shape(module: nn.Module) -> tuple[int, ...]:
    """Weight shape of a dense, masked or sparse layer, e.g. (out, in) for a Linear."""
    from utils.toolkits.sparse import is_sparse_layer
    if is_sparse_layer(module):
        return tuple(module.weight_shape)
    return tuple(mask_of(module).shape)


_RESHAPE_METHODS = ("flatten", "unflatten", "view", "reshape")
_RESHAPE_FUNCTIONS = (torch.flatten, torch.unflatten, torch.reshape)


def is_reshape(node, modules: dict) -> bool:
    """Whether the fx ``node`` regroups features without mixing them (flatten, view, ...)."""
    if node.op == "call_method":
        return node.target in _RESHAPE_METHODS
    if node.op == "call_function":
        return node.target in _RESHAPE_FUNCTIONS
    return node.op == "call_module" and isinstance(modules[node.target], (nn.Flatten, nn.Unflatten))


def trace_flow(model: nn.Module):
    """The flow (see module doc) of ``model`` traced with ``torch.fx``.

    A feed's ``offset`` shifts the source's units in the consumer's input (concatenation,
    option-A padding); ``reshaped`` says a flatten/view/reshape/unflatten lies between source
    and consumer.  Raises if ``torch.fx`` cannot trace the model.
    """
    import torch.fx as fx

    from models.resnet import PadShortcut

    modules = dict(model.named_modules())

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return is_layer(m) or isinstance(m, PadShortcut) or super().is_leaf_module(m, qualname)

    graph = Tracer().trace(model)
    memo: dict = {}
    width: dict[str, int] = {}  # output units per layer

    def width_of(prods) -> int:
        return max((off + width.get(src, 0) for src, off, _ in prods), default=0)

    def arg_nodes(args) -> list:
        out = []
        if isinstance(args, fx.Node):
            out.append(args)
        elif isinstance(args, (list, tuple)):
            for a in args:
                out.extend(arg_nodes(a))
        elif isinstance(args, dict):
            for a in args.values():
                out.extend(arg_nodes(a))
        return out

    def producers(node) -> list:
        if node in memo:
            return memo[node]
        result: list = []
        if node.op == "placeholder":
            result = [(INPUT, 0, False)]
        elif node.op == "get_attr":
            result = []
        elif node.op == "call_module" and is_layer(modules[node.target]):
            result = [(node.target, 0, False)]
        elif node.op == "call_module" and isinstance(modules[node.target], PadShortcut):
            prods = producers(node.args[0])
            front = (modules[node.target].out_channels - width_of(prods)) // 2
            result = [(s, off + front, fl) for s, off, fl in prods]
        elif node.op == "call_function" and node.target is torch.cat:
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            if dim not in (1, -1):
                raise NotImplementedError("torch.cat outside the feature/channel dimension")
            shift = 0
            for part in node.args[0]:
                prods = producers(part)
                result += [(s, off + shift, fl) for s, off, fl in prods]
                shift += width_of(prods)
        else:
            reshaping = is_reshape(node, modules)
            seen = set()
            for arg in arg_nodes((node.args, node.kwargs)):
                for s, off, fl in producers(arg):
                    item = (s, off, fl or reshaping)
                    if item not in seen:
                        seen.add(item)
                        result.append(item)
        memo[node] = result
        return result

    order, feeds, out_feeds = [], {}, []
    for node in graph.nodes:  # topological order
        if node.op == "call_module" and is_layer(modules[node.target]):
            if node.target in feeds:
                raise NotImplementedError(f"layer {node.target} is called twice")
            order.append(node.target)
            feeds[node.target] = producers(node.args[0])
            shape = layer_shape(modules[node.target])
            width[node.target] = shape[0]
            if [s for s, _, _ in feeds[node.target]] == [INPUT] and feeds[node.target][0][1] == 0:
                width.setdefault(INPUT, shape[1])  # a layer reading only the input sets its width
        elif node.op == "output":
            out_feeds = producers(node.args[0])
    return order, feeds, out_feeds, width.get(INPUT)


def chain_flow(model: nn.Module):
    """Fallback: layers in registration order, each fed by the previous one."""
    order = [name for name, m in model.named_modules() if is_layer(m)]
    feeds = {name: [(order[i - 1] if i else INPUT, 0, True)] for i, name in enumerate(order)}
    return order, feeds, [(order[-1], 0, False)] if order else [], None


def flow(model: nn.Module):
    """Layer data flow of ``model``, as :func:`trace_flow` returns it.

    A bare layer (``nn.Linear(10, 5)``) is a one-layer chain named ``""``, its name in
    ``model.named_modules()``: fx would trace into its forward and find no layer.  Models
    that fx cannot trace fall back to a chain of their layers in registration order.
    """
    if is_layer(model):
        return chain_flow(model)
    try:
        return trace_flow(model)
    except Exception:  # untraceable control flow: assume a plain chain
        return chain_flow(model)


def source_edges(stats: list[np.ndarray], n_src: int, off: int, reshaped: bool, kind: str):
    """The consumer's edge statistics restricted to one source of ``n_src`` units.

    ``stats`` are the consumer's (count, abs_weight, signed weight) arrays, each
    (n_out, d_in), summed over kernel positions.  Returns ``(arrays, units)``: the three
    arrays for this source, each (n_out, k), and ``units`` (k,), the source unit behind
    each column.  A source reaches the consumer's d_in input units in one of three ways:

    * flattened feature map, n_src channels -> d_in = n_src * r features (channel-major):
      channel u is read through features u*r .. u*r+r-1, whose entries are summed;
    * features viewed as conv channels, n_src = d_in * r units -> d_in channels
      (``Linear(k, C*H*W)`` then ``view(-1, C, H, W)``): unit u lands in channel u // r
      and is read through that channel's kernel entries;
    * otherwise unit u is input unit ``off + u`` (chains, residual sums, concatenation).

    Example: a Linear of 16 units viewed as (1, 4, 4) and fed to ``Conv2d(1, 1, 3)``
    gives 16 edges, each with ``count`` 9.
    """
    n_out, d_in = stats[0].shape
    if reshaped and n_src < d_in and d_in % n_src == 0:
        r = d_in // n_src
        return [x.reshape(n_out, n_src, r).sum(-1) for x in stats], np.arange(n_src)
    if reshaped and kind == "conv" and n_src > d_in and n_src % d_in == 0:
        channel = np.arange(n_src) // (n_src // d_in)
        return [x[:, channel] for x in stats], np.arange(n_src)
    lo = max(off, 0)
    hi = max(lo, min(off + n_src, d_in))
    return [x[:, lo:hi] for x in stats], np.arange(lo - off, hi - off)
