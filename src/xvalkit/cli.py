"""The `xval` command line. Each command is thin: it parses options and calls the library.

Nothing heavy is imported at module level: `xval --help` stays fast, and `xval run` can choose the
GPU (CUDA_VISIBLE_DEVICES) before TensorFlow or torch is imported.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .errors import XvalError

app = typer.Typer(
    name="xval",
    help="Grouped k-fold cross-validation of many model variants, with a comparison spreadsheet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True, highlight=False)

ConfigOption = Annotated[
    Optional[Path], typer.Option("--config", help="A config.ini overriding the defaults key by key.")
]


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit with `code`."""
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def run(
    experiment: Annotated[Path, typer.Argument(help="The experiment module, e.g. experiments/exp1.py")],
    first: Annotated[Optional[int], typer.Argument(help="First instance to run (default: all).")] = None,
    last: Annotated[Optional[int], typer.Argument(help="Last instance to run (default: FIRST).")] = None,
    gpu_positional: Annotated[
        Optional[int], typer.Argument(metavar="[GPU]", help="GPU ID, as the original scripts took it.")
    ] = None,
    gpu: Annotated[Optional[int], typer.Option("--gpu", help="GPU to train on (overrides gpu_ID).")] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="Train on the CPU even if a GPU is present.")] = False,
    overwrite: Annotated[
        Optional[bool],
        typer.Option("--overwrite/--no-overwrite", help="Redo finished folds (default: the module's overwrite_results)."),
    ] = None,
    debug: Annotated[
        Optional[bool],
        typer.Option("--debug/--no-debug", help="Stop at the first error with its traceback (default: debug_mode)."),
    ] = None,
    folds: Annotated[Optional[int], typer.Option("--folds", help="Number of folds (overrides num_folds).")] = None,
    config: ConfigOption = None,
) -> None:
    """Train instances FIRST to LAST of an experiment with grouped k-fold cross-validation.

    `xval run experiments/exp1.py 3 7 --gpu 1` runs instances 3 to 7 on GPU 1; `xval run exp1.py`
    runs them all. Finished folds are kept and skipped on a rerun unless --overwrite is given.
    """
    from .devices import choose_device_early
    from .experiment import load_experiment
    from .runner import RunOptions, run_experiment

    if gpu is not None and gpu_positional is not None and gpu != gpu_positional:
        fail(f"GPU given twice: positional {gpu_positional} and --gpu {gpu}; give one")
    gpu = gpu if gpu is not None else gpu_positional
    if gpu is not None and gpu < 0:
        fail(f"--gpu {gpu}: a GPU ID is a number >= 0; use --cpu for the CPU")
    # Choose the device before the experiment module (or a models module) can import a framework.
    if gpu is not None or cpu:
        choose_device_early(gpu=gpu, cpu=cpu)
    exp = load_experiment(experiment, config_file=config)
    if gpu is None and not cpu:
        choose_device_early(gpu=exp.gpu_ID, cpu=False)
    options = RunOptions(
        first=first,
        last=last,
        overwrite=exp.overwrite_results if overwrite is None else overwrite,
        debug=exp.debug_mode if debug is None else debug,
        num_folds=folds,
    )
    _set_debug(options.debug)
    summary = run_experiment(exp, options, console=console)
    raise typer.Exit(0 if summary.ok else 1)


# --- preprocess command (issue 3) goes here ---
preprocess_app = typer.Typer(
    help="Audio corpora to datasets of features (time, frequency) for `xval run`.",
    no_args_is_help=True,
)
app.add_typer(preprocess_app, name="preprocess")

NameOption = Annotated[
    Optional[str], typer.Option("--name", help="Dataset name: <data folder>/<NAME>_predictors.npz ...")
]
FeaturesOption = Annotated[
    Optional[str], typer.Option("--features", help="stft, mfcc or mel (default: features_type in config.ini).")
]
JobsOption = Annotated[
    Optional[int], typer.Option("--jobs", help="Worker processes (default: all cores).", min=1)
]


def _preprocess(corpus_kind: str, input_dir: Optional[Path], name: str, features: Optional[str],
                jobs: Optional[int], config: Optional[Path], demo_output: Optional[Path] = None) -> None:
    """Shared body of the preprocess commands: config -> spec -> corpus -> dataset."""
    from .audio import datasets
    from .audio.features import FeatureSpec
    from .audio.preprocess import default_jobs, run_with_progress
    from .config import load_config

    cfg = load_config(config)
    overrides = {"features_type": features}
    if corpus_kind == "demo":
        overrides["fix_length"] = DEMO_DURATION  # one datapoint per whole demo utterance
    spec = FeatureSpec.from_config(cfg.section("features"), **overrides)
    if corpus_kind == "ravdess":
        corpus = datasets.ravdess(input_dir or cfg.data_folder / "RAVDESS")
    elif corpus_kind == "folder":
        corpus = datasets.labelled_folder(input_dir)
    else:
        wav_folder = demo_output or cfg.data_folder / "demo_wav"
        corpus = datasets.demo(wav_folder, sr=DEMO_SR, duration=DEMO_DURATION)
    run_with_progress(corpus, spec, cfg.data_folder, name, jobs or default_jobs(), console)


DEMO_SR, DEMO_DURATION = 16000, 1.0


@preprocess_app.command("ravdess")
def preprocess_ravdess(
    input_dir: Annotated[
        Optional[Path],
        typer.Option("--input", help="The RAVDESS folder: Actor_01..Actor_24, or flat (default: <data folder>/RAVDESS)."),
    ] = None,
    name: NameOption = None,
    features: FeaturesOption = None,
    jobs: JobsOption = None,
    config: ConfigOption = None,
) -> None:
    """A RAVDESS corpus: label = emotion EE of MM-VV-EE-II-SS-RR-AA.wav, foldable item = actor AA.

    `xval preprocess ravdess --input ~/RAVDESS --features mfcc` writes ravdess_predictors.npz,
    ravdess_target.npz and ravdess_manifest.json in the data folder (config.ini, section paths).
    Feature parameters come from config.ini, section features.
    """
    _preprocess("ravdess", input_dir, name or "ravdess", features, jobs, config)


@preprocess_app.command("folder")
def preprocess_folder(
    input_dir: Annotated[Path, typer.Option("--input", help="DIR laid out as DIR/<foldable item>/<label>/*.wav.")],
    name: NameOption = None,
    features: FeaturesOption = None,
    jobs: JobsOption = None,
    config: ConfigOption = None,
) -> None:
    """Any corpus laid out as DIR/<foldable item>/<label>/*.wav (classes: the label folders, sorted).

    The dataset is named after DIR unless --name is given.
    """
    _preprocess("folder", input_dir, name or input_dir.resolve().name, features, jobs, config)


@preprocess_app.command("demo")
def preprocess_demo(
    output: Annotated[
        Optional[Path], typer.Option("--output", help="Where to write the demo wavs (default: <data folder>/demo_wav).")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Dataset name.")] = "demo_audio",
    features: FeaturesOption = None,
    jobs: JobsOption = None,
    config: ConfigOption = None,
) -> None:
    """The built-in demo corpus as real wav files, through the whole front end.

    The demo utterances are written as RAVDESS-named wavs (vowels a, e, i, u as emotion codes
    01..04, synthetic speakers as actors, 16 kHz, 1 s) and preprocessed like RAVDESS, one
    datapoint per utterance, into dataset demo_audio.
    """
    _preprocess("demo", None, name, features, jobs, config, demo_output=output)


# --- augment command (issue 4) goes here ---


_DEBUG = False


def _set_debug(value: bool) -> None:
    global _DEBUG
    _DEBUG = value


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one red line and exit status 2; Ctrl-C exits 130."""
    try:
        app(args=argv, standalone_mode=True)
    except XvalError as exc:
        if _DEBUG or os.environ.get("XVAL_DEBUG"):
            traceback.print_exc()
        console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished folds are saved; rerun the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
