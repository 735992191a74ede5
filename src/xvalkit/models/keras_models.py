"""Built-in Keras models. Each takes (input_shape, num_outputs, task_type, **defaults).

`EXAMPLE_model` expects reshaping_type 'conv' (time, frequency, 1); `RNN_model` 'rnn' and
`MLP_model` 'none' take (time, frequency).
"""

from __future__ import annotations


def _head(x, num_outputs: int, task_type: str, regularizer):
    from keras import layers

    activation = "softmax" if task_type == "classification" else None
    return layers.Dense(num_outputs, activation=activation, kernel_regularizer=regularizer, name="output")(x)


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
    """A small CNN: two conv + max-pool blocks, flattened (where in frequency a pattern lies matters
    for spectrograms, so no global pooling), dropout, a dense layer, the head."""
    import keras
    from keras import layers

    reg = keras.regularizers.L2(regularization_lambda)
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for i, (channels, kernel) in enumerate(((channels_1, kernel_size_1), (channels_2, kernel_size_2))):
        x = layers.Conv2D(channels, tuple(kernel), padding="same", activation="relu",
                          kernel_regularizer=reg, name=f"conv_{i + 1}")(x)
        x = layers.BatchNormalization(name=f"bn_{i + 1}")(x)
        x = layers.MaxPooling2D(tuple(pool_size), padding="same", name=f"pool_{i + 1}")(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(hidden_size, activation="relu", kernel_regularizer=reg, name="hidden")(x)
    return keras.Model(inputs, _head(x, num_outputs, task_type, reg), name="EXAMPLE_model")


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
    import keras
    from keras import layers

    if rnn_type not in ("gru", "lstm"):
        raise ValueError(f"rnn_type={rnn_type!r} is not 'gru' or 'lstm'")
    reg = keras.regularizers.L2(regularization_lambda)
    inputs = keras.Input(shape=input_shape)
    cell = layers.GRU if rnn_type == "gru" else layers.LSTM
    recurrent = cell(rnn_units, kernel_regularizer=reg, name=rnn_type)
    x = layers.Bidirectional(recurrent)(inputs) if bidirectional else recurrent(inputs)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(hidden_size, activation="relu", kernel_regularizer=reg, name="hidden")(x)
    return keras.Model(inputs, _head(x, num_outputs, task_type, reg), name="RNN_model")


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
    import keras
    from keras import layers

    reg = keras.regularizers.L2(regularization_lambda)
    inputs = keras.Input(shape=input_shape)
    x = layers.Flatten()(inputs)
    for i, size in enumerate(hidden_sizes):
        x = layers.Dense(size, activation="relu", kernel_regularizer=reg, name=f"hidden_{i + 1}")(x)
        x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _head(x, num_outputs, task_type, reg), name="MLP_model")
