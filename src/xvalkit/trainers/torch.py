"""The PyTorch trainer, at parity with trainers/keras.py.

Same contract: `device_name()`, `check_model(...)`, `fit_predict(job) -> TrainOutput` with the same
history keys as Keras (loss / accuracy / val_loss / val_accuracy, or loss / mae / val_loss /
val_mae), predictions as class probabilities (softmax of the model's logits) or regression outputs,
the best epoch on `save_best_model_metric` restored before predicting (Keras' EarlyStopping rules:
stop after `patience` epochs without improvement), the model saved atomically as a `.pt`.

- Losses: CrossEntropyLoss on int64 class indices; MSELoss on float32 (n, outputs) targets.
- L2: Keras' L2(λ) adds λ·Σw² to the loss (gradient 2λw); torch's weight_decay=wd adds wd·w to the
  gradient, so wd = 2λ gives the same penalty. It is applied, as in the Keras models, to the kernels
  of conv / dense layers and the input kernels of recurrent layers (not biases, BatchNorm, recurrent
  kernels). The logged loss / val_loss add λ·Σw², as Keras' do, so histories compare.
- Batches (SetBatches): one seeded permutation per epoch for the shuffling; in memory the arrays are
  tensors (on the GPU when training there), with `generator=True` each batch is read from the
  per-item arrays (SetData.batch), nothing concatenated.
- TensorBoard: <log_dir>/train and <log_dir>/validation with the tags Keras' callback writes
  (epoch_loss, epoch_accuracy or epoch_mae), written by torch.utils.tensorboard.SummaryWriter.
- Seeds: Python, numpy and torch seeded with job.seed; on the CPU the same seed gives the same run.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np

from .. import atomic
from ..determinism import torch_deterministic, torch_seeds
from ..devices import torch_device
from ..models import model_defaults
from ..threads import for_torch_model
from . import (METRICS, TrainJob, TrainOutput, build_checked, check_output_shape, inference_batch_size, shuffles,
               stopping_patience)

FORMAT_VERSION = 2  # 2: 'input_layout' recorded; 1 (no layout) was channels last
GPU_SET_BYTES = 2 * 1024**3
IN_MEMORY_BYTES = 64 * 1024**2  # on the CPU, a mapped dataset's set up to this size is gathered once


def device_name() -> str:
    return torch_device()[1]


def _build(model_fn, input_shape, outputs: int, task_type: str, params: dict):
    from torch import nn

    return build_checked(model_fn, input_shape, outputs, task_type, params, nn.Module, "torch.nn.Module", "keras")


def check_model(model_fn, input_shape, outputs: int, task_type: str, params: dict) -> None:
    """Build the model once and run one datapoint through it (raises if it cannot be built)."""
    import torch

    model = _build(model_fn, input_shape, outputs, task_type, params).eval()
    with torch.no_grad():
        check_output_shape(model(torch.zeros((1,) + tuple(input_shape))).shape, outputs)


def regularized_parameters(model) -> list:
    """The weights a Keras twin would give a kernel_regularizer (see the module docstring)."""
    from torch import nn

    chosen = []
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            chosen.append(module.weight)
        elif isinstance(module, nn.RNNBase):
            chosen += [p for name, p in module.named_parameters() if name.startswith("weight_ih")]
    return chosen


def l2_factor(model_fn, params: dict) -> float:
    """λ of the model, when its function declares `regularization_lambda`; else no penalty."""
    return float(params.get("regularization_lambda", 0.0)) if "regularization_lambda" in model_defaults(model_fn) else 0.0


def make_optimizer(model, name: str, learning_rate: float, l2: float):
    """The optimiser, with weight decay 2λ on the regularised weights only, Keras' default epsilons."""
    import torch

    decayed = {id(p) for p in regularized_parameters(model)}
    groups = [
        {"params": [p for p in model.parameters() if id(p) in decayed], "weight_decay": 2.0 * l2},
        {"params": [p for p in model.parameters() if id(p) not in decayed], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if name == "adam":
        return torch.optim.Adam(groups, lr=learning_rate, eps=1e-7)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=learning_rate, alpha=0.9, eps=1e-7)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=learning_rate)
    raise ValueError(f"optimizer={name!r} is not one of 'adam', 'sgd', 'rmsprop'")


def build(job: TrainJob, device: str = "cpu"):
    """(model on `device`, optimiser, λ) for this fold's input shape."""
    p = job.params
    model = _build(job.model_fn, job.data.input_shape, job.data.num_outputs, job.task_type, p).to(device)
    l2 = l2_factor(job.model_fn, p)
    return model, make_optimizer(model, p["optimizer"], p["learning_rate"], l2), l2


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class SetBatches:
    """One set's datapoints as (x, y) tensor batches.

    In memory, the set is gathered once into tensors (on `device`: on a GPU a set up to
    GPU_SET_BYTES lives there), and a batch is a slice of them, or a gather for a shuffled pass.
    Streaming, each batch is gathered from the per-item arrays (SetData.batch), nothing
    concatenated. Both iterate the same batches in the same order, so a seeded run gives the same
    result either way. (No DataLoader: with no worker processes it only added its own cost, a
    tenth of a tiny fold's.)
    """

    def __init__(self, set_data, *, streaming: bool, device: str, pin_memory: bool = False):
        import torch

        self.set_data, self.streaming, self.pin_memory = set_data, streaming, pin_memory
        if not streaming:
            x, y = set_data.arrays()
            where = device if x.nbytes <= GPU_SET_BYTES else "cpu"
            self.x, self.y = torch.from_numpy(x).to(where), torch.from_numpy(y).to(where)

    def __len__(self) -> int:
        return len(self.set_data)

    def iterate(self, batch_size: int, generator=None):
        """One pass, in order, or shuffled by `generator` (a seeded torch.Generator: one
        permutation drawn per pass)."""
        import torch

        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else None
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            if self.streaming:
                x, y = self.set_data.batch(order[start:stop].numpy() if order is not None else np.arange(start, stop))
                x, y = torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(y))
                yield (x.pin_memory(), y.pin_memory()) if self.pin_memory else (x, y)
            elif order is None:
                yield self.x[start:stop], self.y[start:stop]
            else:
                index = order[start:stop].to(self.x.device)
                yield self.x[index], self.y[index]


class EarlyStopping:
    """Keras' EarlyStopping(restore_best_weights=True): remember the best epoch's state on `monitor`;
    stop once `patience` epochs in a row did not improve on it."""

    def __init__(self, monitor: str, mode: str, patience: int):
        self.monitor, self.patience = monitor, patience
        self.better = (lambda a, b: a < b) if mode == "min" else (lambda a, b: a > b)
        self.best = float("inf") if mode == "min" else float("-inf")
        self.best_epoch, self.best_state, self.wait = 0, None, 0

    def update(self, epoch: int, logs: dict, snapshot) -> bool:
        """After `epoch` (1-based): keep `snapshot()` if it is the best so far; True to stop."""
        current = logs.get(self.monitor)
        if current is None:
            return False
        self.wait += 1
        if self.best_state is None or self.better(current, self.best):
            self.best, self.best_epoch, self.best_state, self.wait = current, epoch, snapshot(), 0
            return False
        return self.wait >= self.patience and epoch > 1


class ScalarLog:
    """TensorBoard scalars in <log_dir>/<name>, through torch.utils.tensorboard.SummaryWriter
    (no TensorFlow), flushed after each epoch so that a running fold's curves show."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder
        self._writer = SummaryWriter(log_dir=str(folder), max_queue=100, flush_secs=3600)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        try:
            for tag, value in values.items():
                self._writer.add_scalar(tag, float(value), step)
            self._writer.flush()
        except OSError as exc:  # a full disk: name the folder (faults.py)
            exc.filename = exc.filename or str(self.path)
            raise

    def close(self) -> None:
        try:
            self._writer.close()
        except OSError:  # already reported by the write that failed, or about to be
            pass


class Epochs:
    """A fold's record of its epochs, shared with trainers/fused.py: the history, the TensorBoard
    curves, `job.on_epoch` and early stopping."""

    def __init__(self, job: TrainJob):
        p = job.params
        self.on_epoch, self.metric = job.on_epoch, METRICS[job.task_type]
        self.history: dict[str, list[float]] = {"loss": [], self.metric: [], "val_loss": [], f"val_{self.metric}": []}
        self.stopper = EarlyStopping(p["save_best_model_metric"], p["save_best_model_mode"], stopping_patience(p))
        logs_dir = job.log_dir if p.get("tensorboard") and job.log_dir is not None else None
        self.boards = ({"": ScalarLog(logs_dir / "train"), "val_": ScalarLog(logs_dir / "validation")}
                       if logs_dir else {})

    def record(self, epoch: int, train: tuple[float, float], val: tuple[float, float], penalty: float,
               snapshot) -> bool:
        """Epoch `epoch`'s (loss, metric) on the training and validation sets, the L2 penalty added to
        both losses as Keras logs them; True to stop (`snapshot()`: the weights, kept if the best)."""
        metric = self.metric
        logs = {"loss": train[0] + penalty, metric: train[1], "val_loss": val[0] + penalty, f"val_{metric}": val[1]}
        for key, value in logs.items():
            self.history[key].append(value)
        for prefix, board in self.boards.items():
            board.scalars(epoch - 1, {f"epoch_{k}": logs[prefix + k] for k in ("loss", metric)})
        if self.on_epoch is not None:
            self.on_epoch(epoch, dict(logs))
        return self.stopper.update(epoch, logs, snapshot)

    def close(self) -> None:
        for board in self.boards.values():
            board.close()
        self.boards = {}

    def output(self, predictions: dict, device: str, extra: dict) -> TrainOutput:
        """The fold's TrainOutput: its history, and the best epoch (the last without one)."""
        epochs = len(self.history["loss"])
        return TrainOutput(self.history, predictions, epochs, self.stopper.best_epoch or epochs, device, extra)


class _Epoch:
    """Sample-weighted sums of the loss and the metric over one pass, kept on the device."""

    def __init__(self, task_type: str):
        self.task_type, self.loss, self.metric, self.count = task_type, 0.0, 0.0, 0

    def add(self, loss, out, y) -> None:
        import torch

        n = len(y)
        with torch.no_grad():
            self.loss = self.loss + loss.detach().float() * n
            if self.task_type == "classification":
                self.metric = self.metric + (out.argmax(dim=1) == y).sum()
            else:
                self.metric = self.metric + (out.float() - y).abs().mean(dim=1).sum()
        self.count += n

    def values(self) -> tuple[float, float]:
        return float(self.loss) / self.count, float(self.metric) / self.count


def l2_penalty(weights, l2: float) -> float:
    """λ·Σw² over `weights`, summed in their order (float32: another order changes the last bits)."""
    import torch

    if not l2 or not weights:
        return 0.0
    with torch.no_grad():
        return float(l2 * sum(w.float().square().sum() for w in weights))


def _run_pass(model, batches, loss_fn, task_type: str, device: str, amp: bool, optimizer=None, scaler=None) -> _Epoch:
    import torch

    epoch = _Epoch(task_type)
    training = optimizer is not None
    model.train(training)
    with torch.set_grad_enabled(training):
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast("cuda", enabled=amp):
                out = model(x)
            loss = loss_fn(out.float(), y)
            if training:
                optimizer.zero_grad(set_to_none=True)
                if amp:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:  # a disabled GradScaler's step still cost a fifth of the optimiser's step
                    loss.backward()
                    optimizer.step()
            epoch.add(loss, out, y)
    return epoch


def predict(model, batches, task_type: str, device: str, amp: bool = False) -> np.ndarray:
    """Class probabilities (softmax of the logits) or regression outputs, float32."""
    import torch

    model.eval()
    outputs = []
    with torch.no_grad():
        for x, _ in batches:
            with torch.autocast("cuda", enabled=amp):
                out = model(x.to(device, non_blocking=True)).float()
            outputs.append(torch.softmax(out, dim=1) if task_type == "classification" else out)
    return torch.cat(outputs).cpu().numpy().astype(np.float32)


def _model_source(model_fn) -> str | None:
    """The user's models module a model function comes from (None for the built-ins)."""
    import inspect

    if model_fn.__module__ == "xvalkit.models.torch_models":
        return None
    model_fn = getattr(model_fn, "__wrapped_function__", model_fn)  # an original-scripts model (models/legacy.py)
    try:
        return str(Path(inspect.getfile(model_fn)).resolve())
    except (TypeError, OSError):
        return None


def save(job: TrainJob, model) -> None:
    """The state_dict and what rebuilds the model (see xvalkit.loading), atomically."""
    import torch

    p = job.params
    norm = job.data.normalizer
    payload = {
        "format": "xvalkit-torch", "format_version": FORMAT_VERSION,
        "architecture": p["architecture"],
        "parameters": {k: p[k] for k in model_defaults(job.model_fn, job.data.input_shape, job.data.num_outputs)
                       if k in p},
        "input_shape": tuple(int(n) for n in job.data.input_shape),
        "num_outputs": int(job.data.num_outputs),
        "task_type": job.task_type,
        "reshaping_type": p["reshaping_type"],
        "input_layout": "channels_first" if job.data.channels_first else "channels_last",
        "models_module": _model_source(job.model_fn),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "normalization": None if norm is None else {"mean": torch.from_numpy(np.asarray(norm.mean)),
                                                    "std": torch.from_numpy(np.asarray(norm.std))},
    }
    # through a Python file, so that a full disk raises an OSError (errno 28) that faults.py can
    # tell from a bug; torch.save(path) would only say "unexpected pos ..."
    atomic.write_with(job.model_path, lambda handle: torch.save(payload, handle))


def streams(job: TrainJob, set_data, device: str) -> bool:
    """Whether a set is read batch by batch: with `generator=True`, and on the CPU for a mapped
    dataset's set above IN_MEMORY_BYTES (the in-memory mode then keeps the pages it read, shared by
    the workers in the page cache, instead of a private copy). A smaller set is gathered once:
    gathering and normalising batch by batch cost more than the copy (a tenth of a tiny fold)."""
    if job.generator:
        return True
    row = set_data.table.x[:1]
    return device == "cpu" and set_data.table.mapped and len(set_data) * row.size * 4 > IN_MEMORY_BYTES


def fit_predict(job: TrainJob) -> TrainOutput:
    import torch

    seed_everything(job.seed)
    device, description = torch_device()
    determinism = torch_deterministic(device)
    p = job.params
    amp = bool(p.get("mixed_precision")) and device.startswith("cuda")
    if p.get("mixed_precision") and not amp:
        print("mixed_precision=True is ignored on the CPU (torch autocast is used on a GPU only)", file=sys.stderr)
    model, optimizer, l2 = build(job, device)
    determinism["torch_threads"] = for_torch_model(model, p.get("threads", 0))  # one for a tiny model (threads.py)
    weights = regularized_parameters(model)
    loss_fn = torch.nn.CrossEntropyLoss() if job.task_type == "classification" else torch.nn.MSELoss()
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    data, batch_size = job.data, p["batch_size"]
    pin = job.generator and device.startswith("cuda")
    sets = {name: SetBatches(s, streaming=streams(job, s, device), device=device, pin_memory=pin)
            for name, s in data.sets().items()}
    shuffling = torch.Generator().manual_seed(job.seed) if shuffles(p) else None
    eval_batch = inference_batch_size(batch_size, data.input_shape)
    epochs = Epochs(job)
    try:
        for epoch in range(1, p["num_epochs"] + 1):
            train = _run_pass(model, sets["train"].iterate(batch_size, shuffling), loss_fn, job.task_type, device, amp,
                              optimizer, scaler)
            # Keras logs the training loss with the penalty at each batch's weights; the end-of-epoch
            # weights are close enough for a log (the gradient itself uses the exact penalty).
            val = _run_pass(model, sets["val"].iterate(eval_batch), loss_fn, job.task_type, device, amp)
            if epochs.record(epoch, train.values(), val.values(), l2_penalty(weights, l2),
                             lambda: {k: v.detach().clone() for k, v in model.state_dict().items()}):
                break
    finally:
        epochs.close()
    if epochs.stopper.best_state is not None:
        model.load_state_dict(epochs.stopper.best_state)
    predictions = {name: predict(model, batches.iterate(eval_batch), job.task_type, device, amp)
                   for name, batches in sets.items()}
    save(job, model)
    return epochs.output(predictions, description,
                         {"determinism": determinism, "seeds": torch_seeds(job.seed, shuffles(p))})
