"""The network every strategy trains: a plain multilayer perceptron, one logit per class
(``num_classes`` 1 for a regression model: one forecast per row).

The architecture lives in ``MLP.config`` so the model store can rebuild the exact module from JSON
and then load bare weights; that is how a saved model loads without ever unpickling code.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from pipeline.errors import PipelineError

NUM_CLASSES = 3  # 0 BUY, 1 HOLD, 2 SELL; a label source may have more (regime: 4)

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}


class MLP(nn.Module):
    """For each hidden size: Linear -> activation -> Dropout; then Linear to one logit per class.

    ``config`` holds exactly what :func:`build_mlp` needs, so ``build_mlp(**model.config)``
    yields a module whose ``state_dict`` keys match this one's.
    """

    def __init__(
        self, input_size: int, hidden_layers: list[int], dropout: float, activation: str,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "input_size": int(input_size),
            "hidden_layers": [int(h) for h in hidden_layers],
            "dropout": float(dropout),
            "activation": activation,
            "num_classes": int(num_classes),
        }
        layers: list[nn.Module] = []
        width = int(input_size)
        for hidden in hidden_layers:
            layers.append(nn.Linear(width, int(hidden)))
            layers.append(ACTIVATIONS[activation]())
            layers.append(nn.Dropout(dropout))
            width = int(hidden)
        layers.append(nn.Linear(width, int(num_classes)))
        self.network = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)


def build_mlp(input_size: int, hidden_layers: list[int], dropout: float, activation: str,
              num_classes: int = NUM_CLASSES) -> MLP:
    """Build the MLP, rejecting bad architectures with a message the user can act on.

    Initial weights come from torch's global RNG: call ``trainer.seed_everything(seed)`` first
    for a reproducible model.
    """
    if activation not in ACTIVATIONS:
        allowed = ", ".join(ACTIVATIONS)
        raise PipelineError(
            f"model.architecture.activation: {activation!r} is not supported; allowed: {allowed}"
        )
    if int(input_size) < 1:
        raise PipelineError(f"model input size must be at least 1, got {input_size}")
    if any(int(h) < 1 for h in hidden_layers):
        raise PipelineError(
            f"model.architecture.hidden_layers: every size must be >= 1, got {list(hidden_layers)}"
        )
    if not 0.0 <= float(dropout) < 1.0:
        raise PipelineError(f"model.architecture.dropout: must be in [0, 1), got {dropout}")
    if int(num_classes) < 1:  # 1: a regression head (one forecast per row)
        raise PipelineError(f"a model needs at least 1 output, got {num_classes}")
    return MLP(input_size, list(hidden_layers), dropout, activation, num_classes)
