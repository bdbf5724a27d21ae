"""Running a trained network on a table: fixed tiles of rows, a set number of torch threads.

float32 matrix kernels round differently for different shapes (one row takes another code
path than many, and an odd number of rows another again), so a customer scored alone, in a
streamed block or in a Dask partition would get scores that differ in the last digits from
the same customer scored in the whole table. Every call of the network here sees exactly
``tile_rows`` rows (the last tile padded with zeros): the kernels, and with them the rounding,
are the same whatever the number of rows and wherever a customer sits in its block.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch

#: Rows per call of the reference autoencoder (9 -> 16 -> 12 -> 8). 1,024 rather than 4,096: a single
#: customer no longer pays for 4,095 padded rows, and a million rows are faster too, with the same bits
#: for the shipped Train.csv (benchmarks/bench_scoring_parts.py --only tiles).
INFERENCE_TILE = 1024


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch threads, then restore the previous number.

    Nothing is set when torch already runs on ``n`` threads, so threads that score side by
    side under one ``torch_threads(1)`` never change the process-wide number under each other.
    """
    before = torch.get_num_threads()
    if before == int(n):
        yield
        return
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_in_tiles(net: Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]], X: np.ndarray,
                 n_threads: int = 1, tile_rows: int = INFERENCE_TILE) -> np.ndarray | tuple[np.ndarray, ...]:
    """``net(X)`` as float64, computed tile by tile with ``tile_rows`` rows per call.

    ``net`` takes a float32 tensor of ``tile_rows`` rows and returns a tensor, or a tuple of
    tensors, with one entry per row along the first axis; the result has the same structure.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = len(X)
    outputs: list[np.ndarray] = []
    single = True
    with torch_threads(n_threads), torch.inference_mode():
        for start in range(0, max(n, 1), tile_rows):
            tile = X[start:start + tile_rows]
            rows = len(tile)
            if rows < tile_rows:
                tile = np.concatenate([tile, np.zeros((tile_rows - rows, X.shape[1]), np.float32)])
            out = net(torch.from_numpy(tile))
            single = isinstance(out, torch.Tensor)
            parts = [o.numpy() for o in ((out,) if single else out)]
            if not outputs:
                # one float64 array per output, filled tile by tile (float32 -> float64 is exact)
                outputs = [np.empty((n, *p.shape[1:]), dtype="float64") for p in parts]
            for target, part in zip(outputs, parts):
                target[start:start + rows] = part[:rows]
    return outputs[0] if single else tuple(outputs)
