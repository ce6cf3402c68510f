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


def seed_init(seed: int) -> None:
    """Seed torch's global RNG before building a model (the thesis's ``torch.manual_seed``)."""
    torch.manual_seed(seed)
