"""Resume a killed run where it stopped: :func:`utils.engine.train.train` saves its state while it
trains, and a rerun of the same run continues from the last save with the same numbers.

A run opens a scope (:func:`resume_from`) around its method's ``run``; inside it, the k-th call of
``train`` owns the file ``call<k>-<phase>.safetensors`` in the scope's directory.  The file holds the model,
the optimizer, the batch-order generator, the global RNG, the history so far and the hooks' state,
under a key made of the call's settings and a digest of the model *as the call started*: a rerun
reaches the same call with the same model (runs are deterministic), finds the key, and goes on
from the saved epoch; a finished call is restored without training.  Anything else (a changed
setting or code, another start) has another key and trains from the start; the file it finds
under another key is set aside (``aside/<its key>/``), not overwritten, and taken back when a later
rerun has that key again: a run resumed on a machine that trains in another precision (bf16 or
not, which enters the settings) leaves the other machine's progress intact for when it returns.

A checkpoint is one safetensors file: its tensors, and the plain values around them (numbers,
strings, lists, dicts with int or str keys, tuples) as JSON in the file's metadata
(:func:`pack` / :func:`unpack`); bool tensors are bit-packed and tensors that are mostly zero (a
pruned layer's weights, their momentum) keep only their nonzero entries.  Nothing in it is
executable, so a run's checkpoints may be committed and carried to another machine, where the
same run resumes from them.  Files of the earlier ``torch.save`` format (``call<k>-<phase>.pt``)
are read with ``torch.load(weights_only=True)`` and rewritten in the safetensors format when
loaded.  Writes are atomic (temporary file, then rename).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor, nn

from utils.files import write_atomic
from utils.runs.encoding import pack_bool, unpack_bool

#: least seconds between two saves of one ``train`` call (its last epoch is always saved)
SAVE_EVERY_S = 30.0
#: the checkpoint scope of the run being trained (None: no checkpoints)
_SCOPE: ContextVar[Checkpoints | None] = ContextVar("checkpoint_scope", default=None)
#: the safetensors metadata entry naming the format of :func:`pack`
FORMAT = "sparse-network-analysis checkpoint 2"
#: the formats :func:`unpack` reads (1: every tensor dense; its skeleton is a subset of 2's)
READABLE_FORMATS = (FORMAT, "sparse-network-analysis checkpoint 1")
#: the file suffixes of a checkpoint, the current one first (``.pt``: read only, then rewritten)
SUFFIXES = (".safetensors", ".pt")
#: the subdirectory of a run's checkpoints where files of another key wait (``aside/<key>/<file>``)
ASIDE = "aside"


def pack(state) -> bytes:
    """``state`` (nested dicts, lists and tuples of tensors and plain values) as safetensors bytes.

    Tensors are stored under ``t0, t1, …`` and replaced in the JSON skeleton by ``{"$t": name}``.  A bool
    tensor is stored bit-packed (``{"$t": name, "bits": shape}``); a floating tensor mostly zero (a pruned
    layer's weights and momentum) as its nonzero entries, a bit map of them under ``<name>.nz`` and, if
    it has ``-0.0`` entries, a bit map of those under ``<name>.neg0`` (``{"$t": name, "nonzero": shape}``),
    so the round trip is bit-exact.  Tuples become ``{"$tuple": [...]}`` and dicts whose keys are not all
    plain strings ``{"$dict": [[key, value], ...]}``, so :func:`unpack` gives back equal values of equal
    types (floats as Python's JSON writes them: NaN and ±Infinity included, as a history's first row has).

    >>> s = {"epochs_done": 3, "rows": [{"top1": 9.5}], 0: (torch.ones(2), None)}
    >>> back = unpack(pack(s))
    >>> back["epochs_done"], back["rows"], back[0][0].tolist(), back[0][1]
    (3, [{'top1': 9.5}], [1.0, 1.0], None)
    """
    tensors: dict[str, Tensor] = {}
    names = itertools.count()

    def encode(value):
        if isinstance(value, Tensor):
            return _encode_tensor(value.detach().cpu(), f"t{next(names)}", tensors)
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, tuple):
            return {"$tuple": [encode(v) for v in value]}
        if isinstance(value, list):
            return [encode(v) for v in value]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: encode(v) for k, v in value.items()}
            return {"$dict": [[encode(k), encode(v)] for k, v in value.items()]}
        raise TypeError(f"a checkpoint holds tensors and plain values, not {type(value).__name__}")

    skeleton = json.dumps(encode(state))
    return save_tensors(tensors, metadata={"format": FORMAT, "state": skeleton})


def unpack(data: bytes):
    """The state :func:`pack` wrote (raises ValueError for bytes of another format)."""
    try:
        tensors = load_tensors(data)
        metadata = _metadata(data)
    except (SafetensorError, ValueError) as exc:
        raise ValueError(f"not a checkpoint: {exc}") from None
    if metadata.get("format") not in READABLE_FORMATS:
        raise ValueError(f"not a checkpoint of format {FORMAT!r}")

    def decode(value):
        if isinstance(value, list):
            return [decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "$t" in value:
            return _decode_tensor(value, tensors)
        if "$tuple" in value:
            return tuple(decode(v) for v in value["$tuple"])
        if "$dict" in value:
            return {decode(k): decode(v) for k, v in value["$dict"]}
        return {k: decode(v) for k, v in value.items()}

    return decode(json.loads(metadata["state"]))


def _encode_tensor(value: Tensor, name: str, tensors: dict[str, Tensor]) -> dict:
    """Store ``value`` in ``tensors`` under ``name`` (compactly, see :func:`pack`); its skeleton entry."""
    shape = list(value.shape)
    if value.dtype == torch.bool:
        tensors[name] = pack_bool(value)
        return {"$t": name, "bits": shape}
    if value.is_floating_point() and value.numel():
        nonzero = value != 0
        map_bytes = (value.numel() + 7) // 8          # one bit map; two at most (.nz, .neg0)
        if int(nonzero.sum()) * value.element_size() + 2 * map_bytes < value.nbytes:
            tensors[name] = value[nonzero].contiguous()
            tensors[f"{name}.nz"] = pack_bool(nonzero)
            # masking by multiplication leaves -0.0 where a pruned weight was negative; its bits enter the
            # state digest that keys the next call, so they are kept
            negative_zero = ~nonzero & torch.signbit(value)
            if negative_zero.any():
                tensors[f"{name}.neg0"] = pack_bool(negative_zero)
            return {"$t": name, "nonzero": shape}
    # a copy: safetensors refuses tensors that share storage (e.g. views of one buffer)
    tensors[name] = value.contiguous().clone()
    return {"$t": name}


def _decode_tensor(entry: dict, tensors: dict[str, Tensor]) -> Tensor:
    """Inverse of :func:`_encode_tensor`."""
    name = entry["$t"]
    stored = tensors[name]
    if "bits" in entry:
        return unpack_bool(stored, tuple(entry["bits"]))
    if "nonzero" in entry:
        shape = tuple(entry["nonzero"])
        value = torch.zeros(shape, dtype=stored.dtype)
        value[unpack_bool(tensors[f"{name}.nz"], shape)] = stored
        if f"{name}.neg0" in tensors:
            value[unpack_bool(tensors[f"{name}.neg0"], shape)] = -0.0
        return value
    return stored


def _metadata(data: bytes) -> dict:
    """A safetensors file's ``__metadata__`` (its header is 8 bytes of length, then JSON)."""
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + length]).get("__metadata__") or {}


def read(path: str | os.PathLike):
    """A checkpoint file's state, either format; raises on an unreadable or foreign file."""
    path = Path(path)
    if path.suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=True)
    return unpack(path.read_bytes())


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
        #: (``seconds``: the training time those epochs took before the kill, from their history) and,
        #: from checkpoints that say, ``"trained_on"``: ``[device name, epochs]`` segments, oldest first
        self.restored: list[dict] = []

    def slot(self, phase: str, settings: dict, model: nn.Module, earlier: Sequence[dict] = ()) -> Slot:
        """The file of the next ``train`` call, keyed by its settings and the model it starts from;
        a file keyed by one of the ``earlier`` settings (what an earlier version of the code keyed
        the same call with) resumes too, and is saved under the current key from then on."""
        self.calls += 1
        start = state_digest(model)
        key, *earlier_keys = (self._key(s, start) for s in (settings, *earlier))
        safe_phase = "".join(c if c.isalnum() else "-" for c in phase)
        return Slot(self.directory / f"call{self.calls}-{safe_phase}{SUFFIXES[0]}", key, self.every_s, self,
                    tuple(earlier_keys))

    def _key(self, settings: dict, start: str) -> str:
        return hashlib.sha256(json.dumps({"settings": settings, "context": self.context, "start": start},
                                         sort_keys=True, default=str).encode()).hexdigest()[:16]


class Slot:
    """One ``train`` call's checkpoint file."""

    def __init__(self, path: Path, key: str, every_s: float, owner: Checkpoints | None = None,
                 earlier_keys: tuple[str, ...] = ()):
        self.path, self.key, self.every_s, self.owner = path, key, every_s, owner
        self.earlier_keys = earlier_keys
        self._last_save = time.monotonic()

    @property
    def legacy(self) -> Path:
        """Where the earlier format (``torch.save``) kept this call's state."""
        return self.path.with_suffix(SUFFIXES[1])

    def aside(self, key: str) -> Path:
        """Where this call's file under ``key`` waits while the call has another key."""
        return self.path.parent / ASIDE / key / self.path.name

    def load(self) -> dict | None:
        """The saved state if the file exists and has this call's key, else None (noted in the
        owner's ``restored``).  A file of another key is moved aside and one of this key taken back
        from there (see the module).  A state found in the earlier format, or under one of the
        ``earlier_keys``, is rewritten in the current format under the current key (an earlier-format
        file is removed), so a run's checkpoints can be committed as they are."""
        found = next((p for p in (self.path, self.legacy) if p.is_file()), None)
        state = _read_state(found) if found is not None else None
        rekey = state is not None and state.get("key") in self.earlier_keys
        if rekey:
            state["key"] = self.key
        if state is not None and state.get("key") != self.key:
            moved = self.aside(state["key"]).with_name(found.name)
            moved.parent.mkdir(parents=True, exist_ok=True)
            os.replace(found, moved)
            # said aloud: a run that was meant to resume and trains from its start instead costs hours
            print(f"warning: {found} ({state.get('epochs_done', 0)} epochs done) has another key (a changed "
                  f"setting, data copy, precision or code): set aside in {moved.parent}, "
                  f"this call trains from its start", file=sys.stderr, flush=True)
            found = state = None
        if state is None and (waiting := self.aside(self.key)).is_file():
            state = _read_state(waiting)
            if state is not None and state.get("key") == self.key:
                os.replace(waiting, self.path)
                _remove_empty(waiting.parent)
                found = self.path
        if state is None or state.get("key") != self.key:
            return None
        if found == self.legacy or rekey:
            self.save({k: v for k, v in state.items() if k != "key"})
        if self.owner is not None:
            seconds = sum(float(row.get("seconds", 0.0)) for row in state.get("rows", []))
            restored = {"call": self.owner.calls, "file": self.path.name,
                        "epochs": int(state.get("epochs_done", 0)), "seconds": seconds}
            if "trained_on" in state:
                restored["trained_on"] = state["trained_on"]
            self.owner.restored.append(restored)
        return state

    def due(self, final: bool) -> bool:
        return final or time.monotonic() - self._last_save >= self.every_s

    def save(self, state: dict) -> None:
        """Write ``state`` (with the key) atomically; an earlier-format file of this call goes."""
        write_atomic(self.path, pack({**state, "key": self.key}))
        if self.legacy != self.path:
            self.legacy.unlink(missing_ok=True)
        self._last_save = time.monotonic()


def _read_state(path: Path) -> dict | None:
    """A checkpoint file's state if it is readable and keyed, else None: a file from another
    version or torn by a crash is trained over afresh."""
    try:
        state = read(path)
    except Exception:
        return None
    return state if isinstance(state, dict) and isinstance(state.get("key"), str) else None


def _remove_empty(directory: Path) -> None:
    """Remove ``aside/<key>/`` and ``aside/`` once they are empty."""
    for folder in (directory, directory.parent):
        try:
            folder.rmdir()
        except OSError:
            return


def _saved(directory: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """(phase, saved state) of each readable ``call<k>-<phase>`` file in ``directory``, in call
    order (a call with files of both formats: the current one)."""
    files: dict[int, Path] = {}
    for suffix in reversed(SUFFIXES):
        for file in Path(directory).glob(f"call*{suffix}"):
            files[int(file.name[4:].split("-")[0])] = file
    for _, file in sorted(files.items()):
        try:
            state = read(file)
        except Exception:
            continue
        yield file.stem.split("-", 1)[1], state


def progress(directory: str | os.PathLike) -> str | None:
    """What a run's checkpoints hold, e.g. ``"mining 30/30, finetune 12/30"`` (None without any):
    for ``sweep --dry-run``."""
    return held(directory)[0]


def held(directory: str | os.PathLike) -> tuple[str | None, float]:
    """(:func:`progress`'s text, seconds of training) of a run's checkpoints, each file read once;
    the seconds are those of the saved history rows.

    Calls run one after another, so files after the first unfinished call come from another start
    (another precision, an older setting): the next run sets them aside when it reaches them.  They
    are named as such and their seconds are not counted.
    """
    parts, later, seconds, unfinished = [], [], 0.0, False
    for phase, state in _saved(directory):
        done, total = state.get("epochs_done"), state.get("epochs_total")
        text = f"{phase} {done}/{total if total is not None else '?'}"
        if unfinished:
            later.append(text)
            continue
        parts.append(text)
        seconds += sum(row.get("seconds") or 0.0 for row in state.get("rows", []))
        unfinished = done is None or total is None or done < total
    if later:
        return ", ".join(parts) + "; from another start (set aside when reached): " + ", ".join(later), float(seconds)
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
