"""Built-in PyTorch models, twins of keras_models.py: the same names, keyword parameters and defaults.

Each takes (input_shape, num_outputs, task_type, **defaults) and returns a `torch.nn.Module` whose
head outputs logits (classification) or the regression outputs; the trainer applies the softmax
for predictions. Inputs are what FoldData.prepare gives: channels first, (batch, 1, time, frequency),
for 'conv' (the PyTorch convention), (batch, time, frequency) for 'rnn' / 'none'.

Parity with Keras: Glorot-uniform kernels and zero biases (orthogonal recurrent kernels, LSTM
forget bias 1), BatchNorm with Keras' momentum and epsilon, 'same' convolutions and max-pooling that
rounds up as Keras' 'same' does. `regularization_lambda` is the L2 factor of the Keras models: the
trainer applies it to the same weights (conv / dense kernels and the recurrent input kernels; not
biases, BatchNorm or recurrent kernels) through the optimiser's weight decay (see trainers/torch.py).

Importing this module does not import torch: the layers are built when a model function is called.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=None)
def _layers():
    """Small modules the Sequential models need (defined on first use, so torch stays unimported)."""
    import torch
    from torch import nn

    class ChannelAxis(nn.Module):
        """(batch, time, frequency) -> (batch, 1, time, frequency); channels-first inputs pass as they
        are. It has no weights but keeps its place in the Sequential, so the layer indices, hence
        the state_dict keys, of models saved before inputs were channels first stay the same."""

        def forward(self, x):
            return x.unsqueeze(1) if x.dim() == 3 else x

    class LastState(nn.Module):
        """A GRU or LSTM over time frames; its last hidden state (both directions concatenated)."""

        def __init__(self, cell: str, input_size: int, units: int, bidirectional: bool):
            super().__init__()
            kind = nn.GRU if cell == "gru" else nn.LSTM
            self.rnn = kind(input_size, units, batch_first=True, bidirectional=bidirectional)

        def forward(self, x):
            _, state = self.rnn(x)
            h = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c)
            return torch.cat([h[-2], h[-1]], dim=1) if self.rnn.bidirectional else h[-1]

    return ChannelAxis, LastState


def _keras_init(model):
    """Keras' initialisers, so that the same architecture starts from the same distribution."""
    from torch import nn

    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.GRU, nn.LSTM)):
            for name, param in module.named_parameters():
                if name.startswith("weight_ih"):
                    for chunk in param.data.chunk(3 if isinstance(module, nn.GRU) else 4):
                        nn.init.xavier_uniform_(chunk)
                elif name.startswith("weight_hh"):
                    for chunk in param.data.chunk(3 if isinstance(module, nn.GRU) else 4):
                        nn.init.orthogonal_(chunk)
                else:
                    nn.init.zeros_(param)
                    if isinstance(module, nn.LSTM) and name.startswith("bias_ih"):
                        param.data[module.hidden_size:2 * module.hidden_size] = 1.0  # unit forget bias
    return model


def _flat_size(layers, input_shape) -> int:
    import torch

    with torch.no_grad():
        return int(layers(torch.zeros((1,) + tuple(input_shape))).shape[1])


def _finish(body, input_shape, num_outputs: int, *, name: str):
    """Append the head (logits or regression outputs) to `body`, initialise as Keras does."""
    from torch import nn

    body.append(nn.Linear(_flat_size(body.eval(), input_shape), num_outputs))
    model = _keras_init(body.train())
    model.architecture = name
    return model


def EXAMPLE_model(
    input_shape,
    num_outputs,
    task_type,
    *,
    channels_1: int = 16,
    channels_2: int = 32,
    kernel_size_1: tuple = (3, 3),
    kernel_size_2: tuple = (3, 3),
    pool_size: tuple = (2, 2),
    hidden_size: int = 64,
    dropout: float = 0.2,
    regularization_lambda: float = 0.001,
):
    """A small CNN: two conv + max-pool blocks, flattened, dropout, a dense layer, the head."""
    from torch import nn

    ChannelAxis, _ = _layers()
    layers = [ChannelAxis()]
    if len(input_shape) == 3 and input_shape[-1] == 1 and input_shape[0] != 1:
        raise ValueError(f"EXAMPLE_model takes channels-first inputs (1, time, frequency), got {tuple(input_shape)}")
    in_channels = input_shape[0] if len(input_shape) == 3 else 1  # (channels, time, frequency)
    for channels, kernel in ((channels_1, kernel_size_1), (channels_2, kernel_size_2)):
        layers += [
            nn.Conv2d(in_channels, channels, tuple(kernel), padding="same"),
            nn.ReLU(),
            nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01),  # Keras: epsilon 1e-3, momentum 0.99
            nn.MaxPool2d(tuple(pool_size), ceil_mode=True),
        ]
        in_channels = channels
    layers += [nn.Flatten(), nn.Dropout(dropout)]
    body = nn.Sequential(*layers)
    body.append(nn.Linear(_flat_size(body.eval(), input_shape), hidden_size))
    body.append(nn.ReLU())
    return _finish(body, input_shape, num_outputs, name="EXAMPLE_model")


def RNN_model(
    input_shape,
    num_outputs,
    task_type,
    *,
    rnn_type: str = "gru",
    rnn_units: int = 64,
    bidirectional: bool = False,
    hidden_size: int = 64,
    dropout: float = 0.2,
    regularization_lambda: float = 0.001,
):
    """A recurrent model over time frames: GRU or LSTM, last state, a dense layer, the head."""
    from torch import nn

    if rnn_type not in ("gru", "lstm"):
        raise ValueError(f"rnn_type={rnn_type!r} is not 'gru' or 'lstm'")
    if len(input_shape) != 2:
        raise ValueError(f"RNN_model takes (time, features) inputs (reshaping_type 'rnn'), got {tuple(input_shape)}")
    _, LastState = _layers()
    state = rnn_units * (2 if bidirectional else 1)
    body = nn.Sequential(
        LastState(rnn_type, input_shape[-1], rnn_units, bidirectional),
        nn.Dropout(dropout), nn.Linear(state, hidden_size), nn.ReLU(),
    )
    return _finish(body, input_shape, num_outputs, name="RNN_model")


def MLP_model(
    input_shape,
    num_outputs,
    task_type,
    *,
    hidden_sizes: tuple = (128, 64),
    dropout: float = 0.2,
    regularization_lambda: float = 0.001,
):
    """A multilayer perceptron on the flattened input."""
    import math

    from torch import nn

    body = nn.Sequential(nn.Flatten())
    size = math.prod(input_shape)
    for hidden in hidden_sizes:
        body.extend([nn.Linear(size, hidden), nn.ReLU(), nn.Dropout(dropout)])
        size = hidden
    return _finish(body, input_shape, num_outputs, name="MLP_model")
