"""Resume a killed run where it stopped: :func:`utils.engine.train.train` saves its state while it
trains, and a rerun of the same run continues from the last save with the same numbers.

A run opens a scope (:func:`resume_from`) around its method's ``run``; inside it, the k-th call of
``train`` owns the file ``call<k>-<phase>.pt`` in the scope's directory.  The file holds the model,
the optimizer, the batch-order generator, the global RNG, the history so far and the hooks' state,
under a key made of the call's settings and a digest of the model *as the call started*: a rerun
reaches the same call with the same model (runs are deterministic), finds the key, and goes on
from the saved epoch; a finished call is restored without training.  Anything else (a changed
setting or code, another start) has another key and trains from the start.

Checkpoints are ``torch.save`` files of tensors and plain values, read with
``torch.load(weights_only=True)``.  Writes are atomic (temporary file, then rename).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch
from torch import nn

from utils.files import write_atomic

#: least seconds between two saves of one ``train`` call (its last epoch is always saved)
SAVE_EVERY_S = 30.0
#: the checkpoint scope of the run being trained (None: no checkpoints)
_SCOPE: ContextVar[Checkpoints | None] = ContextVar("checkpoint_scope", default=None)


def state_digest(model: nn.Module) -> str:
    """sha256 (16 hex digits) of every tensor of ``model.state_dict()``, names and bytes, in order."""
    h = hashlib.sha256()
    for name, value in model.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class Checkpoints:
    """The checkpoint files of one run (see the module docstring).

    Args:
        directory: where the files live (created on the first save).
        every_s: least seconds between two saves of one call (default :data:`SAVE_EVERY_S`); a
            call's last epoch is always saved.
        context: what else the run's result depends on (e.g. the digests of its data), part of
            every key.
    """

    def __init__(self, directory: str | os.PathLike, every_s: float | None = None, context: dict | None = None):
        self.directory = Path(directory)
        self.every_s = SAVE_EVERY_S if every_s is None else every_s
        self.context = context or {}
        self.calls = 0
        #: what the calls so far restored instead of training: ``{"call", "file", "epochs", "seconds"}``
        #: (``seconds``: the training time those epochs took before the kill, from their history)
        self.restored: list[dict] = []

    def slot(self, phase: str, settings: dict, model: nn.Module) -> Slot:
        """The file of the next ``train`` call, keyed by its settings and the model it starts from."""
        self.calls += 1
        key = hashlib.sha256(json.dumps({"settings": settings, "context": self.context,
                                         "start": state_digest(model)},
                                        sort_keys=True, default=str).encode()).hexdigest()[:16]
        safe_phase = "".join(c if c.isalnum() else "-" for c in phase)
        return Slot(self.directory / f"call{self.calls}-{safe_phase}.pt", key, self.every_s, self)


class Slot:
    """One ``train`` call's checkpoint file."""

    def __init__(self, path: Path, key: str, every_s: float, owner: Checkpoints | None = None):
        self.path, self.key, self.every_s, self.owner = path, key, every_s, owner
        self._last_save = time.monotonic()

    def load(self) -> dict | None:
        """The saved state if the file exists and has this call's key, else None (noted in the
        owner's ``restored``)."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:          # a file from another version or torn by a crash: train afresh
            return None
        if not isinstance(state, dict) or state.get("key") != self.key:
            return None
        if self.owner is not None:
            seconds = sum(float(row.get("seconds", 0.0)) for row in state.get("rows", []))
            self.owner.restored.append({"call": self.owner.calls, "file": self.path.name,
                                        "epochs": int(state.get("epochs_done", 0)), "seconds": seconds})
        return state

    def due(self, final: bool) -> bool:
        return final or time.monotonic() - self._last_save >= self.every_s

    def save(self, state: dict) -> None:
        """Write ``state`` (with the key) atomically."""
        buffer = io.BytesIO()
        torch.save({**state, "key": self.key}, buffer)
        write_atomic(self.path, buffer.getvalue())
        self._last_save = time.monotonic()


def _saved(directory: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """(phase, saved state) of each readable ``call<k>-<phase>.pt`` in ``directory``, in call order."""
    files = sorted(Path(directory).glob("call*.pt"), key=lambda f: int(f.name[4:].split("-")[0]))
    for file in files:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception:
            continue
        yield file.stem.split("-", 1)[1], state


def progress(directory: str | os.PathLike) -> str | None:
    """What a run's checkpoints hold, e.g. ``"mining 30/30, finetune 12/30"`` (None without any):
    for ``sweep --dry-run``."""
    return held(directory)[0]


def held(directory: str | os.PathLike) -> tuple[str | None, float]:
    """(:func:`progress`'s text, seconds of training) of a run's checkpoints, each file read once;
    the seconds are those of the saved history rows."""
    parts, seconds = [], 0.0
    for phase, state in _saved(directory):
        parts.append(f"{phase} {state.get('epochs_done')}/{state.get('epochs_total', '?')}")
        seconds += sum(row.get("seconds") or 0.0 for row in state.get("rows", []))
    return ", ".join(parts) or None, float(seconds)


def current() -> Checkpoints | None:
    """The checkpoints of the run being trained, or None outside :func:`resume_from`."""
    return _SCOPE.get()


@contextmanager
def resume_from(directory: str | os.PathLike, every_s: float | None = None,
                context: dict | None = None) -> Iterator[Checkpoints]:
    """Let every ``train`` call inside save to and resume from ``directory`` (``context``: see
    :class:`Checkpoints`).

    >>> import tempfile
    >>> with resume_from(tempfile.mkdtemp()) as ckpt:
    ...     current() is ckpt
    True
    >>> current() is None
    True
    """
    token = _SCOPE.set(Checkpoints(directory, every_s, context))
    try:
        yield _SCOPE.get()
    finally:
        _SCOPE.reset(token)
