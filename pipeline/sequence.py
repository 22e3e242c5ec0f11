"""Sequence models (``model.type`` lstm and gru) and the windows they read.

The networks are KTRDR's (grammar doc section 4): a batch-first ``nn.LSTM``/``nn.GRU`` over
``(batch, sequence_length, features)``, the last layer's final hidden state, dropout, then one
linear head. The submodules are named ``lstm``/``gru``, ``dropout`` and ``fc`` so ``state_dict``
keys are KTRDR's own and its loaders read ``model.pt`` unchanged.

Windows follow KTRDR's rule: stride 1, built inside each split (and here also inside each
symbol's rows of a split, which KTRDR, using one symbol's rows, never had to), window k covers
rows [k, k + L) and takes row k + L - 1's label. They are never materialised: a
:class:`Windows` keeps the split's feature matrix and ``unfold`` gives a strided view of every
window; a batch is one gather of the view by window index, on whatever device holds the matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.errors import PipelineError
from pipeline.model import NUM_CLASSES

SEQUENCE_TYPES = ("lstm", "gru")


class RecurrentNetwork(nn.Module):
    """Recurrent layers -> last layer's final hidden state -> Dropout -> Linear.

    ``config`` holds what :func:`build_recurrent` needs to rebuild the module from JSON.
    """

    cell_name = "lstm"
    __jit_ignored_attributes__ = ["config"]  # model_full.pt's TorchScript needs no JSON

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, dropout: float,
                 sequence_length: int, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.config = {
            "type": self.cell_name,
            "input_size": int(input_size),
            "hidden_size": int(hidden_size),
            "num_layers": int(num_layers),
            "dropout": float(dropout),
            "sequence_length": int(sequence_length),
            "num_classes": int(num_classes),
        }
        cell = nn.LSTM if self.cell_name == "lstm" else nn.GRU
        # Dropout between stacked layers only: torch warns (and does nothing) with one layer.
        self.add_module(self.cell_name, cell(
            input_size=int(input_size), hidden_size=int(hidden_size),
            num_layers=int(num_layers), batch_first=True,
            dropout=float(dropout) if int(num_layers) > 1 else 0.0))
        self.dropout = nn.Dropout(float(dropout))
        self.fc = nn.Linear(int(hidden_size), int(num_classes))


class LSTMNetwork(RecurrentNetwork):
    """KTRDR's LSTM network; metadata.json records this class name, as KTRDR's does."""

    cell_name = "lstm"

    def forward(self, x: Tensor) -> Tensor:
        _, (h_n, _) = self.lstm(x)
        return self.fc(self.dropout(h_n[-1]))


class GRUNetwork(RecurrentNetwork):
    """KTRDR's GRU network: the same with ``nn.GRU`` (whose state is the hidden state alone)."""

    cell_name = "gru"

    def forward(self, x: Tensor) -> Tensor:
        _, h_n = self.gru(x)
        return self.fc(self.dropout(h_n[-1]))


NETWORKS: dict[str, type[RecurrentNetwork]] = {"lstm": LSTMNetwork, "gru": GRUNetwork}


def build_recurrent(model_type: str, input_size: int, hidden_size: int, num_layers: int,
                    dropout: float, sequence_length: int,
                    num_classes: int = NUM_CLASSES) -> RecurrentNetwork:
    """Build an LSTM or GRU network, refusing bad sizes with a message the user can act on.

    Initial weights come from torch's global RNG (seed it first, as for the MLP)."""
    kind = str(model_type).lower()
    if kind not in NETWORKS:
        raise PipelineError(f"model.type {model_type!r} is not a sequence model")
    checks = (("input size", input_size), ("model.architecture.hidden_size", hidden_size),
              ("model.architecture.num_layers", num_layers),
              ("model.architecture.sequence_length", sequence_length))
    for name, value in checks:
        if int(value) < 1:
            raise PipelineError(f"{name}: must be at least 1, got {value}")
    if not 0.0 <= float(dropout) < 1.0:
        raise PipelineError(f"model.architecture.dropout: must be in [0, 1), got {dropout}")
    if int(num_classes) < 1:
        raise PipelineError(f"a model needs at least one output, got {num_classes}")
    return NETWORKS[kind](input_size, hidden_size, num_layers, dropout, sequence_length,
                          num_classes)


class Windows:
    """Every ``length``-row window of ``matrix`` that stays inside one segment, as a view.

    ``matrix`` is a split's (rows, features) tensor; ``segments`` the row counts of its
    contiguous pieces (one per symbol, in order). ``len`` is the number of windows; indexing
    with a tensor of window numbers gathers those windows, ``(batch, length, features)``, on
    the matrix's device; an integer or slice gives the same for one window or a range.
    """

    def __init__(self, matrix: Tensor, length: int, starts: Tensor) -> None:
        self.matrix = matrix
        self.length = int(length)
        self.starts = starts  # first row of each window, int64 on the matrix's device
        # (rows - L + 1, L, features) sharing the matrix's storage: no window is copied. A
        # matrix shorter than one window has none (unfold would refuse it).
        if len(matrix) >= self.length:
            self.view = matrix.unfold(0, self.length, 1).transpose(1, 2)
        else:
            self.view = matrix.new_zeros((0, self.length, *matrix.shape[1:]))

    @classmethod
    def over(cls, matrix: Any, length: int, segments: Sequence[int]) -> Windows:
        """The windows of a split whose rows come in ``segments`` (rows per symbol)."""
        tensor = torch.as_tensor(matrix, dtype=torch.float32)
        if int(length) < 1:
            raise PipelineError(f"sequence_length must be at least 1, got {length}")
        if sum(segments) != len(tensor):
            raise PipelineError(f"segments cover {sum(segments)} rows of {len(tensor)}")
        return cls(tensor, length, window_starts(segments, length))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self), self.length, int(self.matrix.shape[1]))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: Any) -> Tensor:
        return self.view[self.starts[index]]

    def to(self, device: torch.device) -> Windows:
        """The same windows over a copy of the matrix on ``device`` (once, not per window)."""
        return Windows(self.matrix.to(device), self.length, self.starts.to(device))

    def with_matrix(self, matrix: Tensor) -> Windows:
        """The same windows over another matrix of the same shape (a permuted column)."""
        return Windows(matrix, self.length, self.starts)


def window_starts(segments: Sequence[int], length: int) -> Tensor:
    """First rows of the windows inside each segment, in row order: segment s of n rows gives
    starts ``offset .. offset + n - length`` (none if n < length)."""
    starts: list[np.ndarray] = []
    offset = 0
    for rows in segments:
        count = int(rows) - int(length) + 1
        if count > 0:
            starts.append(np.arange(offset, offset + count, dtype=np.int64))
        offset += int(rows)
    joined = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(joined)


def window_targets(values: Any, segments: Sequence[int], length: int) -> Any:
    """Per-row values (labels of any dtype, float targets, sample weights) of each window's
    last row, in window order; a numpy array in, a numpy array out."""
    ends = window_starts(segments, length).numpy() + int(length) - 1
    return np.asarray(values)[ends]
