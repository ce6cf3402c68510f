"""Separate, reproducible RNG streams per purpose (SPEC §1: init, prune, data, analysis).

The init stream is torch's global RNG seeded with ``torch.manual_seed(seed)`` right
before the model is built, as in the thesis, so SynFlow and random runs of one seed
share a byte-identical init.  The other streams are private generators.
"""
from __future__ import annotations

import hashlib

import torch

STREAMS = ("prune", "data", "analysis", "sign")


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed derived from ``(seed, stream)``; independent of every other stream."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def generator(seed: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` for one stream of one seed."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, stream))


def seed_init(seed: int, thesis_train_size: int | None = None) -> None:
    """Seed torch's global RNG before building a model, as the thesis did.

    The thesis (Synaptic-Flow's ``load.dataloader``) draws ``torch.randperm`` over the
    training set for its pruning subset between ``torch.manual_seed(seed)`` and building
    the model.  Passing ``thesis_train_size`` (60,000 for MNIST, 50,000 for CIFAR-10)
    replays that draw, so the init is the thesis's own (its SynFlow layer densities then
    match SPEC §8.1 to rounding).
    """
    torch.manual_seed(seed)
    if thesis_train_size:
        torch.randperm(thesis_train_size)
