"""A CPU replay of torch's CUDA normal stream, so random masks drawn on the thesis's GPU can be
drawn again here.

The thesis pruned its random networks on a GPU: Synaptic-Flow's ``Rand`` scores every prunable
weight with ``torch.randn_like(w)`` on the device, so the scores come from torch's CUDA
generator, not the CPU one that drew the init.  That generator is counter-based
(Philox4x32-10, Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"), which makes
it reproducible anywhere once three things are known:

1. the key: the seed (``torch.manual_seed(seed)`` seeds every device; the offset starts at 0);
2. the counter offset of each call: torch's ``calc_execution_policy`` advances it by
   ``((numel − 1) // (256 · grid · 4) + 1) · 4`` per ``normal_`` call;
3. which GPU thread drew which element: thread ``t`` of ``256 · grid`` threads draws
   ``curand_normal4`` values for elements ``t + 256·grid·q`` (q = 0, 1, 2, 3, then the next
   call of the thread), with ``grid = min(⌈numel / 256⌉, max_blocks)``; ``max_blocks`` is the
   GPU's resident-block limit (SMs × threads per SM / 256).

A ``curand_normal4`` call is one Philox block (counter = (offset/4 + call, 0, thread, 0)) turned
into four normals by two Box-Muller transforms.  The GPU uses the ``__sincosf`` intrinsic, so a
replayed value can differ from the GPU's in its last bits; a mask replayed from these scores
can therefore differ in the rare weights whose scores sit within an ulp of the threshold
(measured on the thesis's FC: 0.02-0.04 % of entries).

>>> stream = CudaNormalStream(seed=21, max_blocks=288)
>>> x = stream.randn((10, 100))          # the values torch.randn(10, 100, device="cuda") gave
>>> stream.offset                        # after one call of ≤ 256·4 elements per thread
4
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

BLOCK = 256          # threads per block in torch's random kernels
UNROLL = 4           # curand_normal4: four values per Philox block

# Philox4x32-10 constants (Random123 / cuRAND).
_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_LOW = np.uint64(0xFFFFFFFF)
# cuRAND's uniform conversion: u = x·2^-32 + 2^-33 in float32, so u ∈ (0, 1].
_INV32 = np.float32(2.3283064e-10)
_INV32_2PI = np.float32(2.3283064e-10 * 6.2831855)


def philox4x32_10(counter: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox4x32 with 10 rounds.

    Args:
        counter: uint32 array (4, n), one 128-bit counter per column.
        key: two 32-bit words.

    Returns:
        uint32 array (4, n): the random block of each counter.

    >>> philox4x32_10(np.zeros((4, 1), np.uint32), (0, 0))[:, 0].tolist()   # Random123 known answer
    [1713891541, 3782854029, 3160894540, 2600525784]
    """
    c0, c1, c2, c3 = (np.asarray(row, dtype=np.uint32) for row in counter)
    k0, k1 = key[0] & 0xFFFFFFFF, key[1] & 0xFFFFFFFF
    for round_ in range(10):
        p0 = _M0 * c0.astype(np.uint64)
        p1 = _M1 * c2.astype(np.uint64)
        hi0, lo0 = (p0 >> np.uint64(32)).astype(np.uint32), (p0 & _LOW).astype(np.uint32)
        hi1, lo1 = (p1 >> np.uint64(32)).astype(np.uint32), (p1 & _LOW).astype(np.uint32)
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint32(k0), lo1, hi0 ^ c3 ^ np.uint32(k1), lo0
        if round_ < 9:
            k0, k1 = (k0 + _W0) & 0xFFFFFFFF, (k1 + _W1) & 0xFFFFFFFF
    return np.stack([c0, c1, c2, c3])


def _box_muller(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cuRAND's ``_curand_box_muller``: (s·sin v, s·cos v), s = √(−2 ln u), float32."""
    u = x.astype(np.float32) * _INV32 + _INV32 / np.float32(2)
    v = y.astype(np.float32) * _INV32_2PI + _INV32_2PI / np.float32(2)
    s = np.sqrt(np.float32(-2.0) * np.log(u))
    return s * np.sin(v), s * np.cos(v)


def grid_size(numel: int, max_blocks: int) -> int:
    """Blocks torch launches for a random kernel over ``numel`` elements."""
    return max(1, min(math.ceil(numel / BLOCK), max_blocks))


def counter_increment(numel: int, max_blocks: int) -> int:
    """How far one ``normal_`` call over ``numel`` elements advances the generator's offset."""
    per_thread = ((numel - 1) // (BLOCK * grid_size(numel, max_blocks) * UNROLL) + 1) * UNROLL
    return (per_thread + 3) // 4 * 4


def cuda_normal(numel: int, seed: int, offset: int, max_blocks: int) -> np.ndarray:
    """The ``numel`` float32 values of one ``torch.randn`` call on a CUDA device whose generator
    holds ``seed`` and ``offset``; ``max_blocks`` is the GPU's resident-block limit."""
    threads = BLOCK * grid_size(numel, max_blocks)
    element = np.arange(numel)
    thread, q = element % threads, element // threads
    call, lane = q // UNROLL, q % UNROLL
    counter = np.zeros((4, numel), np.uint32)
    counter[0] = offset // 4 + call
    counter[2] = thread
    block = philox4x32_10(counter, (seed & 0xFFFFFFFF, seed >> 32))
    a_sin, a_cos = _box_muller(block[0], block[1])
    b_sin, b_cos = _box_muller(block[2], block[3])
    return np.choose(lane, [a_sin, a_cos, b_sin, b_cos]).astype(np.float32)


class CudaNormalStream:
    """Successive ``torch.randn`` calls on a CUDA generator seeded with ``seed``, replayed on CPU.

    Args:
        seed: the ``torch.manual_seed`` value.
        max_blocks: the GPU's resident-block limit; it only matters for tensors over
            256 · max_blocks elements.  The thesis's GPU: 288 (found from its FC masks: layer 1,
            78,400 weights, agrees on 99.98 % with 288 blocks and on 98.9 % with 307).
        offset: the generator's Philox offset (0 right after seeding).
    """

    def __init__(self, seed: int, max_blocks: int = 288, offset: int = 0):
        self.seed, self.max_blocks, self.offset = int(seed), int(max_blocks), int(offset)

    def skip(self, shapes: list[tuple[int, ...]], times: int = 1) -> None:
        """Advance past ``times`` rounds of calls of these shapes without drawing them."""
        self.offset += times * sum(counter_increment(math.prod(s), self.max_blocks) for s in shapes)

    def randn(self, shape: tuple[int, ...]) -> Tensor:
        """The next call's values, float32 of ``shape``."""
        numel = math.prod(shape)
        values = cuda_normal(numel, self.seed, self.offset, self.max_blocks)
        self.offset += counter_increment(numel, self.max_blocks)
        return torch.from_numpy(values.reshape(shape))
