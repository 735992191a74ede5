"""Per-fold overhead of `xval run` against a bare in-process Keras loop over the same folds.

Both train the same EXAMPLE_model on the same demo folds for the same epochs (no early stop), in
one process, after a warm-up; the bare loop does only concatenate / standardise / build / fit /
predict. The difference is what xvalkit adds per fold: resolving, fold data, metrics, the model
.hdf5, the results pickle and the spreadsheet (atomic writes), TensorBoard logs (on by default).

    python benchmarks/overhead.py [--folds 8] [--epochs 3] [--repeats 5]
    python benchmarks/overhead.py --quick     # 2 folds x 1 epoch, 2 repeats: checks that it runs
Goal: under 0.25 s per fold.

The three are interleaved, and each repeat gives one overhead per fold ((xval - bare) / folds, the
pair timed back to back); it prints their median and min-max. The min-max of 5 repeats holds the
true median with 94 % probability (1 - 2 / 2^5), whatever the noise's distribution: a median
outside a previous range is a change, a new figure inside it may be noise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from xvalkit.data import load_dataset  # noqa: E402
from xvalkit.devices import import_keras  # noqa: E402
from xvalkit.experiment import load_experiment  # noqa: E402
from xvalkit.runner import RunOptions, run_experiment  # noqa: E402

MODEL = ["channels_1=8", "channels_2=8", "hidden_size=16"]


def write_experiment(folder: Path, folds: int, epochs: int, tensorboard: bool) -> Path:
    params = [f"num_epochs={epochs}", f"patience={epochs}", f"tensorboard={tensorboard}", *MODEL]
    text = (
        "short_description = 'overhead benchmark'\ndataset = 'demo'\nnum_experiment = 1\n"
        f"num_folds = {folds}\nexperiment_folder = 'results'\ntask_type = 'classification'\n"
        f"global_parameters = {params!r}\nexperiment = {{1: ['architecture=\"EXAMPLE_model\"', "
        "'reshaping_type=\"conv\"', 'comment_1=\"a\"', 'comment_2=\"b\"']}\n"
    )
    path = folder / "bench_exp.py"
    path.write_text(text)
    return path


def bare_loop(exp, dataset, epochs: int) -> float:
    """What a researcher would write by hand: the same folds, model and training, nothing saved."""
    from xvalkit.models.keras_models import EXAMPLE_model
    from xvalkit.runner import plan_instances

    keras = import_keras()
    (inst,) = plan_instances(exp, RunOptions(), dataset)
    start = time.perf_counter()
    for fold in inst.folds:
        keras.backend.clear_session()
        keras.utils.set_random_seed(fold.index)
        xs = {s: np.concatenate([dataset.predictors[i] for i in items]) for s, items in
              (("train", fold.train), ("val", fold.val), ("test", fold.test))}
        ys = {s: np.concatenate([dataset.targets[i] for i in items]) for s, items in
              (("train", fold.train), ("val", fold.val), ("test", fold.test))}
        mean, std = xs["train"].mean((0, 1)), xs["train"].std((0, 1)) + 1e-8
        xs = {s: ((x - mean) / std)[..., None].astype(np.float32) for s, x in xs.items()}
        model = EXAMPLE_model(xs["train"].shape[1:], 4, "classification", channels_1=8, channels_2=8, hidden_size=16)
        model.compile(optimizer=keras.optimizers.Adam(0.001), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=epochs, restore_best_weights=True)
        model.fit(xs["train"], ys["train"], validation_data=(xs["val"], ys["val"]), epochs=epochs,
                  batch_size=32, callbacks=[early], verbose=0)
        for s in xs:
            model.predict(xs[s], batch_size=32, verbose=0)
    return time.perf_counter() - start


def xval_run(folder: Path, folds: int, epochs: int, tensorboard: bool, config: Path) -> float:
    from rich.console import Console

    shutil.rmtree(folder / "results", ignore_errors=True)
    exp = load_experiment(write_experiment(folder, folds, epochs, tensorboard), config_file=config)
    start = time.perf_counter()
    run_experiment(exp, RunOptions(overwrite=True), console=Console(file=open(os.devnull, "w")))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 folds x 1 epoch, 2 repeats: check that it runs")
    args = parser.parse_args()
    if args.quick:
        args.folds, args.epochs, args.repeats = 2, 1, 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = folder / "c.ini"
        config.write_text(f"[paths]\ndata_folder = {folder / 'data'}\n")
        exp = load_experiment(write_experiment(folder, args.folds, args.epochs, True), config_file=config)
        dataset = load_dataset(exp.config.data_folder, "demo")
        bare_loop(exp, dataset, args.epochs)  # warm-up: imports, first graph traces
        xval_run(folder, args.folds, args.epochs, True, config)
        times = {"bare": [], "xval": [], "xval (tensorboard off)": []}
        for _ in range(args.repeats):  # interleaved, so drifts hit all three alike
            times["bare"].append(bare_loop(exp, dataset, args.epochs))
            times["xval"].append(xval_run(folder, args.folds, args.epochs, True, config))
            times["xval (tensorboard off)"].append(xval_run(folder, args.folds, args.epochs, False, config))
    print(f"{args.folds} folds x {args.epochs} epochs, {args.repeats} repeats, CPU, {os.cpu_count()} cores; "
          "seconds per fold: median (min-max over the repeats)")
    for name, values in times.items():
        per_fold = [t / args.folds for t in values]
        line = f"  {name:24s} {spread(per_fold, '.3f')}"
        if name != "bare":
            overheads = [(t - b) / args.folds for t, b in zip(values, times["bare"])]
            line += f"   overhead per fold {spread(overheads, '+.3f')}, goal under 0.25"
        print(line)


def spread(values: list[float], form: str) -> str:
    return f"{statistics.median(values):{form}} ({min(values):{form}} to {max(values):{form}})"


if __name__ == "__main__":
    main()
