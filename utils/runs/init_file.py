"""Compact ``init.safetensors``: the init values a run's seed regenerates are not stored.

A run's initial weights come from ``seed_init(seed, thesis_train_size)`` followed by
``build_model`` (:func:`utils.runs.experiment._fresh_model`).  For most methods (SynFlow,
random, magnitude, dense, DNW) the stored init is exactly that model with the run's masks, so
storing its values again in every run doubles the store for nothing.  Here every encoded
tensor (see :func:`utils.runs.encoding.encode_model`) that the seed reproduces bit for bit is
left out of the file; the file keeps the masks, the tensors the seed does not reproduce
(e.g. Gem-Miner's BatchNorm statistics after mining, DEEPR's θ), and how to regenerate the
rest plus their sha256, as UTF-8 JSON in the uint8 tensor ``KEY`` (not in the file's
metadata: safetensors writes several metadata entries in a random order, and a run's files
must be byte-identical when it is retrained).  Loading rebuilds them and checks the sha256, so a
future change of the init code is an error, never silently other weights.

Example::

    stored = compact(tensors, shapes, model_spec, seed=21, thesis_train_size=50_000)
    full = expand(stored, shapes, model_spec)      # == tensors
"""
from __future__ import annotations

import hashlib
import json

import torch
from torch import Tensor

from models import build_model
from models.masks import prunable_layers, set_masks
from utils.engine.seeding import seed_init
from utils.errors import RunStoreError
from utils.runs.encoding import encode_model, unpack_bool

#: the tensor of a compact init file that says what is regenerated
KEY = "_regenerated.json"
_MASK_PARTS = (".mask", ".support")


def tensors_sha256(tensors: dict[str, Tensor]) -> str:
    """sha256 over ``tensors`` in key order: each key, dtype, shape and bytes."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        value = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        h.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _regenerated(stored: dict[str, Tensor], shapes: dict[str, list[int]], model_spec: dict,
                 seed: int, thesis_train_size: int | None) -> dict[str, Tensor]:
    """The encoding of the seeded fresh model with the masks and supports in ``stored``."""
    with torch.random.fork_rng(devices=[]):     # the caller's global RNG stays as it was
        seed_init(seed, thesis_train_size)
        model = build_model(model_spec["name"], **model_spec.get("kwargs", {}))
    layers = prunable_layers(model)
    masks = {n: unpack_bool(stored[f"{n}.mask"], tuple(shapes[n])) for n in layers}
    support = {n: unpack_bool(stored[f"{n}.support"], tuple(shapes[n])) for n in layers
               if f"{n}.support" in stored}
    set_masks(model, masks, zero_pruned=False)
    encoded, _ = encode_model(model, support)
    return encoded


def compact(tensors: dict[str, Tensor], shapes: dict[str, list[int]], model_spec: dict, *, seed: int,
            thesis_train_size: int | None) -> dict[str, Tensor]:
    """The tensors to store of an encoded init: those equal to the seed's regenerated ones are
    dropped (masks never are) and ``KEY`` added; ``tensors`` itself when none is equal."""
    fresh = _regenerated(tensors, shapes, model_spec, seed, thesis_train_size)
    same = sorted(k for k, v in tensors.items() if not k.endswith(_MASK_PARTS) and k in fresh
                  and fresh[k].dtype == v.dtype and torch.equal(fresh[k], v))
    if not same:
        return tensors
    recipe = {"seed": seed, "thesis_train_size": thesis_train_size, "keys": same,
              "sha256": tensors_sha256({k: tensors[k] for k in same})}
    text = torch.frombuffer(bytearray(json.dumps(recipe, sort_keys=True).encode()), dtype=torch.uint8)
    return {**{k: v for k, v in tensors.items() if k not in same}, KEY: text}


def expand(stored: dict[str, Tensor], shapes: dict[str, list[int]], model_spec: dict,
           where: str = "init") -> dict[str, Tensor]:
    """Inverse of :func:`compact`: the full encoded init (``stored`` as is without ``KEY``)."""
    if KEY not in stored:
        return stored
    stored = dict(stored)
    recipe = json.loads(stored.pop(KEY).numpy().tobytes())
    fresh = _regenerated(stored, shapes, model_spec, recipe["seed"], recipe["thesis_train_size"])
    rebuilt = {k: fresh[k] for k in recipe["keys"] if k in fresh}
    if len(rebuilt) != len(recipe["keys"]) or tensors_sha256(rebuilt) != recipe["sha256"]:
        raise RunStoreError(f"{where}: this version of the code no longer regenerates the init of seed "
                            f"{recipe['seed']} that the run was trained from (sha256 mismatch); "
                            f"use the release that wrote it, or retrain the run")
    return {**stored, **rebuilt}

