"""The `xval` command line. Each command is thin: it parses options and calls the library.

Nothing heavy is imported at module level: `xval --help` stays fast, and `xval run` can choose the
GPU (CUDA_VISIBLE_DEVICES) before TensorFlow or torch is imported.
"""

from __future__ import annotations

import functools
import os
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
_DEBUG = False  # set by `xval run` from --debug / debug_mode: show tracebacks of user errors too

ConfigOption = Annotated[
    Optional[Path], typer.Option("--config", help="A config.ini overriding the defaults key by key.")
]


@app.callback()
def _root() -> None:
    """Grouped k-fold cross-validation of many model variants, with a comparison spreadsheet.

    Typical use: `xval run experiments/exp1.py 3 7 --gpu 1`.
    """


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit with `code`."""
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


def user_errors(command):
    """Turn a user error into one red line and exit status 2, Ctrl-C into exit status 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except XvalError as exc:
            if _DEBUG or os.environ.get("XVAL_DEBUG"):
                traceback.print_exc()
            fail(str(exc))
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: finished folds are saved; rerun the same command to resume")
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@user_errors
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


# --- augment command (issue 4) ---
@app.command()
@user_errors
def augment(
    in_dir: Annotated[Path, typer.Argument(metavar="IN", help="Folder of audio files (searched recursively).")],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="Output folder, outside IN.")],
    n: Annotated[int, typer.Argument(metavar="N", help="Augmented versions per file (>= 1).")],
    seed: Annotated[
        Optional[int], typer.Option("--seed", help="Seed: the same seed gives bit-identical outputs (default: random, logged).")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Files processed in parallel (worker processes).")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace outputs that already exist.")] = False,
    config: ConfigOption = None,
) -> None:
    """Write N randomly augmented versions of every audio file under IN to OUT.

    Reads wav, flac, ogg and mp3; stereo is mixed to mono and the sample rate kept. For IN/sub/x.wav
    it writes OUT/sub/x_aug1.wav ... x_augN.wav and OUT/sub/x_orig.wav (the original, peak-normalised;
    24-bit wavs),
    so labels and foldable items in the names survive. Each version applies a random non-empty subset
    of noise, EQ, reverb and time stretch, in random order, then peak normalisation; the ranges are in
    config.ini [augmentation]. OUT/augment_log.json records every value drawn and the seed.

    Unreadable files are skipped with a warning; the exit status is then 1 (2 for a usage error).
    """
    from .audio.augment import AugmentSpec
    from .audio.augment_files import run_augment
    from .config import load_config

    spec = AugmentSpec.from_config(load_config(config).section("augmentation"))
    summary = run_augment(in_dir, out_dir, n, spec, seed=seed, jobs=jobs, overwrite=overwrite, console=console)
    speed = summary.seconds_out / summary.wall_seconds if summary.wall_seconds else 0.0
    line = (
        f"augmented {summary.files} files into {summary.outputs} outputs in {out_dir} "
        f"({summary.seconds_out:.1f} s of augmented audio in {summary.wall_seconds:.1f} s, {speed:.0f} audio-s/s; "
        f"seed {summary.seed})"
    )
    if summary.skipped:
        line += f"; [yellow]{len(summary.skipped)} unreadable file(s) skipped[/]"
    console.print(line, soft_wrap=True)
    raise typer.Exit(0 if summary.ok else 1)


# --- report command (issue 6) ---
@app.command()
@user_errors
def report(
    experiment: Annotated[
        str, typer.Argument(metavar="EXP", help="Experiment module (experiments/exp1.py), name (exp1) or folder.")
    ],
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw the PNG plots (default: yes).")] = True,
    config: ConfigOption = None,
) -> None:
    """Rebuild the spreadsheet, results.csv, summary.csv and plots of an experiment from its folder.

    Works on a finished, running or crashed experiment; instances with missing or failed folds are marked.

    `xval report exp1` finds experiments/exp1.py; a folder holding results/ works too.
    """
    from .report import open_store, refresh

    store, exp_config = open_store(experiment, config_file=config)
    if exp_config is None and config is not None:
        from .config import load_config

        exp_config = load_config(config)
    files = refresh(store, plots=plots, config=exp_config)
    console.print(f"report of {store.folder}:\n  {files.spreadsheet.name}, {files.results_csv.name}, "
                  f"{files.summary_csv.name}" + (f", {len(files.plots)} plot(s) in plots/" if files.plots else ""),
                  soft_wrap=True)


# --- plan and status commands (issue 7) go here ---


def _set_debug(value: bool) -> None:
    global _DEBUG
    _DEBUG = value


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `xval` script."""
    app(args=argv)


if __name__ == "__main__":
    main()
