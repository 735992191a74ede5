"""The Keras (TensorFlow backend) trainer."""

from __future__ import annotations

import numpy as np

from .. import atomic
from ..determinism import keras_deterministic, keras_seeds
from ..devices import import_keras, keras_device
from . import (METRICS, TrainJob, TrainOutput, build_checked, check_output_shape, inference_batch_size, shuffles,
               stopping_patience)

LOSSES = {"classification": "sparse_categorical_crossentropy", "regression": "mse"}


def make_optimizer(keras, name: str, learning_rate: float):
    classes = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}
    return classes[name](learning_rate=learning_rate)


def _batches(keras, data, batch_size: int, shuffle: bool, seed: int):
    """A keras.utils.PyDataset reading seeded-shuffled batches from a set (SetData.batch)."""

    class ItemBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = np.arange(len(data))
            self.on_epoch_end()

        def __len__(self):
            return int(np.ceil(len(data) / batch_size))

        def __getitem__(self, i):
            return data.batch(self.order[i * batch_size:(i + 1) * batch_size])

        def on_epoch_end(self):
            if shuffle:
                self.rng.shuffle(self.order)

    return ItemBatches()


def device_name() -> str:
    import_keras()
    return keras_device()


def _build(keras, model_fn, input_shape, outputs: int, task_type: str, params: dict):
    return build_checked(model_fn, input_shape, outputs, task_type, params, keras.Model, "keras.Model", "torch")


def check_model(model_fn, input_shape, outputs: int, task_type: str, params: dict) -> None:
    """Build the model once and run one datapoint through it (raises if it cannot be built)."""
    keras = import_keras()
    keras.backend.clear_session()
    model = _build(keras, model_fn, input_shape, outputs, task_type, params)
    check_output_shape(model(np.zeros((1,) + tuple(input_shape), dtype=np.float32)).shape, outputs)


def build(job: TrainJob):
    """Build and compile the instance's model for this fold's input shape."""
    keras = import_keras()
    p = job.params
    model = _build(keras, job.model_fn, job.data.input_shape, job.data.num_outputs, job.task_type, p)
    model.compile(
        optimizer=make_optimizer(keras, p["optimizer"], p["learning_rate"]),
        loss=LOSSES[job.task_type],
        metrics=[METRICS[job.task_type]],
    )
    return model


class _EpochReporter:
    """Forward (epoch, logs) to the runner after each epoch (live progress)."""

    def __new__(cls, keras, callback):
        class Reporter(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                callback(epoch + 1, dict(logs or {}))

        return Reporter()


def fit_predict(job: TrainJob) -> TrainOutput:
    keras = import_keras()
    keras.backend.clear_session()  # before seeding: clearing the session resets Keras' seed state
    keras.utils.set_random_seed(job.seed)
    device = keras_device()
    determinism = keras_deterministic(on_gpu=device != "CPU")
    p = job.params
    model = build(job)
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor=p["save_best_model_metric"], mode=p["save_best_model_mode"],
            patience=stopping_patience(p), restore_best_weights=True,
        )
    ]
    if p.get("tensorboard") and job.log_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(job.log_dir), write_graph=False))
    if job.on_epoch is not None:
        callbacks.append(_EpochReporter(keras, job.on_epoch))
    data, batch_size = job.data, p["batch_size"]
    # Both modes read batches from the sets (FoldData: the generator mode unmaps what it read, the
    # in-memory mode keeps it resident, shared in the page cache for a mapped dataset), in the same
    # seeded order, so a seeded run gives the same metrics in either mode. Validation and predictions
    # take larger batches (inference_batch_size: the same results, less overhead).
    eval_batch = inference_batch_size(batch_size, data.input_shape)
    train = _batches(keras, data.train, batch_size, shuffle=shuffles(p), seed=job.seed)
    val = _batches(keras, data.val, eval_batch, shuffle=False, seed=job.seed)
    history = model.fit(train, validation_data=val, epochs=p["num_epochs"], callbacks=callbacks, verbose=p["verbose"])
    predictions = {name: model.predict(_batches(keras, s, eval_batch, False, job.seed), verbose=0)
                   for name, s in data.sets().items()}
    with atomic.atomic_path(job.model_path, suffix=".hdf5") as tmp:
        model.save(tmp)
    hist = {k: [float(v) for v in values] for k, values in history.history.items()}
    early = callbacks[0]
    best_epoch = (early.best_epoch + 1) if early.best_weights is not None else len(hist["loss"])
    return TrainOutput(hist, predictions, len(hist["loss"]), best_epoch, device,
                       {"determinism": determinism, "seeds": keras_seeds(job.seed, shuffles(p))})
