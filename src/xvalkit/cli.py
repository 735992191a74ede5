"""The `xval` command line. Each command is thin: it parses options and calls the library.

Nothing heavy is imported at module level: `xval --help` stays fast, and `xval run` can choose the
GPU (CUDA_VISIBLE_DEVICES) before TensorFlow or torch is imported.
"""

from __future__ import annotations

import functools
import inspect
import os
import traceback
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape

from .errors import XvalError
from .faults import EnvironmentFault

app = typer.Typer(
    name="xval",
    help="Grouped k-fold cross-validation of many model variants, with a comparison spreadsheet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help texts are plain text: rich markup ate '[ray]' of '.[ray]'
)
console = Console(stderr=True, highlight=False, soft_wrap=True)  # log lines are never cut
_DEBUG = False  # set by `xval run` from --debug / debug_mode: show tracebacks of user errors too

ConfigOption = Annotated[
    Optional[Path], typer.Option("--config", help="A config.ini overriding the defaults key by key.")
]
# `xval run` and `xval plan` (which shows where a run's jobs would go) take the same options
FuseOption = Annotated[
    Optional[bool],
    typer.Option("--fuse/--no-fuse", help="Train compatible torch folds as one fused model (default: on a GPU)."),
]
JobsPerGpuOption = Annotated[int, typer.Option("--jobs-per-gpu", min=1, help="Jobs (folds) run at once on each listed GPU.")]
CpuWorkersOption = Annotated[
    int, typer.Option("--cpu-workers", min=1, help="Folds trained at once on the CPU, each with its share of the cores.")
]


@app.callback()
def _root() -> None:
    """Grouped k-fold cross-validation of many model variants, with a comparison spreadsheet.

    Typical use: `xval run experiments/exp1.py 3 7 --gpu 1`.
    """


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit with `code`."""
    # escaped: messages name config sections ("config [augmentation]: ..."), which rich would
    # otherwise take for markup and drop
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


RESUME_HINT = "finished folds are saved; rerun the same command to resume"
FAULT_EXIT = 3  # the machine failed the run (faults.py): exit status 3, not 2 (a usage error)
PREPROCESS_INTERRUPTED = "a dataset is saved whole at the end or not at all, so none was half-written"


def user_errors(command=None, *, interrupted: str = RESUME_HINT):
    """Turn a user error into one red line and exit status 2, Ctrl-C into exit status 130 and a
    line saying what was kept (`interrupted`)."""
    if command is None:  # used as @user_errors(interrupted=...)
        return functools.partial(user_errors, interrupted=interrupted)

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except EnvironmentFault as exc:  # full disk, read-only or vanished folder (faults.py)
            if _DEBUG or os.environ.get("XVAL_DEBUG"):
                traceback.print_exc()
            fail(f"{exc}; {interrupted}", code=FAULT_EXIT)
        except XvalError as exc:
            if _DEBUG or os.environ.get("XVAL_DEBUG"):
                traceback.print_exc()
            fail(str(exc))
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted[/]: {interrupted}")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, click.exceptions.ClickException):
            raise
        except Exception as exc:  # not the user's fault: still one line, unless debugging
            if _DEBUG or os.environ.get("XVAL_DEBUG"):
                raise
            text = str(exc).strip().splitlines()
            console.print(f"[bold red]error:[/] {type(exc).__name__}: {escape(text[0]) if text else ''} "
                          "(rerun with --debug, or XVAL_DEBUG=1, for the traceback)", soft_wrap=True)
            raise typer.Exit(1) from None

    wrapper.__doc__ = reflowed(command.__doc__)
    return wrapper


def reflowed(doc: str | None) -> str | None:
    """A docstring with each paragraph on one line: typer keeps the line breaks of every paragraph
    but the first, so --help would break lines where the source does instead of at the terminal's width."""
    if not doc:
        return doc
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def parse_gpus(text: str) -> list[int]:
    """'1' -> [1]; '0,1,3' -> [0, 1, 3]."""
    try:
        gpus = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        fail(f"--gpu {text}: expected GPU IDs like 1 or 0,1,3")
    if not gpus or any(g < 0 for g in gpus):
        fail(f"--gpu {text}: a GPU ID is a number >= 0; use --cpu for the CPU")
    if len(set(gpus)) != len(gpus):
        fail(f"--gpu {text}: a GPU is listed twice; use --jobs-per-gpu to run several jobs on one GPU")
    return gpus


FirstArg = Annotated[Optional[str], typer.Argument(
    help="First instance, or a list of instances: 1,5,9 or 3-7 or 1,4-6,9 (default: all). A number must be "
         "an instance; a range takes the instances in it.")]
LastArg = Annotated[Optional[int], typer.Argument(help="Last instance: FIRST LAST is the range FIRST-LAST.")]
ExperimentArg = Annotated[Path, typer.Argument(
    metavar="EXP", help="The experiment module: experiments/exp1.py, or a name found in experiments/ (exp1).")]
SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", "-p", metavar="NAME=VALUE",
    help="Set a parameter for every selected instance, above the instance itself (repeatable): -p num_epochs=1.")]


def show_notes(notes: list[str]) -> None:
    """The one-line notes of loading an experiment or config (old files, likely typos)."""
    for note in notes:
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)


@app.command()
@user_errors
def run(
    experiment: ExperimentArg,
    first: FirstArg = None,
    last: LastArg = None,
    gpu_positional: Annotated[
        Optional[int], typer.Argument(metavar="GPU", help="GPU ID, as the original scripts took it.")
    ] = None,
    gpu: Annotated[Optional[str], typer.Option("--gpu", help="GPU(s) to train on: 1, or 0,1,3 for one job per GPU at a time (overrides gpu_ID).")] = None,
    jobs_per_gpu: JobsPerGpuOption = 1,
    cpu: Annotated[bool, typer.Option("--cpu", help="Train on the CPU even if a GPU is present.")] = False,
    cpu_workers: CpuWorkersOption = 1,
    backend: Annotated[str, typer.Option("--backend", help="local, ray or slurm (optional extras: pip install -e \".[ray]\" or \".[slurm]\").")] = "local",
    address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster: HOST:PORT of its head, or auto (the one `ray start` started here); default: RAY_ADDRESS, else a new local Ray.")] = None,
    overwrite: Annotated[
        Optional[bool],
        typer.Option("--overwrite/--no-overwrite", help="Redo finished folds (default: the module's overwrite_results)."),
    ] = None,
    debug: Annotated[
        Optional[bool],
        typer.Option("--debug/--no-debug", help="Stop at the first error with its traceback (default: debug_mode)."),
    ] = None,
    folds: Annotated[Optional[int], typer.Option("--folds", help="Number of folds (overrides num_folds).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Plain log lines, no live progress.")] = False,
    slurm: Annotated[Optional[list[str]], typer.Option(
        "--slurm", metavar="NAME=VALUE", help="--backend slurm: a setting of config.ini [slurm] for this run "
        "(repeatable): --slurm partition=gpu --slurm gpus_per_task=1.")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="--backend slurm: submit the jobs, print their IDs and "
                                         "return; `xval status` follows them, `xval report` builds the report.")] = False,
    fuse: FuseOption = None,
    set_parameters: SetOption = None,
    config: ConfigOption = None,
) -> None:
    """Train instances FIRST to LAST of an experiment with grouped k-fold cross-validation.

    `xval run experiments/exp1.py 3 7 --gpu 1` runs instances 3 to 7 on GPU 1; `xval run exp1.py`
    runs them all. Finished folds are kept and skipped on a rerun (so an interrupted run resumes)
    unless --overwrite is given. Each fold's epochs are logged in <experiment folder>/logs/.
    """
    from .devices import choose_device_early, keep_this_process_off_gpus
    from .experiment import load_experiment
    from .runner import RunOptions, run_experiment, trains_in_worker

    if backend not in ("local", "ray", "slurm"):
        fail(f"--backend {backend}: expected local, ray or slurm")
    if (slurm or detach) and backend != "slurm":
        fail(f"{'--slurm' if slurm else '--detach'} is for --backend slurm")
    if backend == "slurm" and (gpu is not None or gpu_positional is not None or cpu_workers > 1 or cpu):
        fail("--backend slurm: GPUs and CPUs are Slurm's to give; set gpus_per_task and cpus_per_task "
             "(config.ini [slurm] or --slurm NAME=VALUE) instead of --gpu, --cpu or --cpu-workers")
    gpus = parse_gpus(gpu) if gpu is not None else None
    if gpus is not None and gpu_positional is not None and gpus != [gpu_positional]:
        fail(f"GPU given twice: positional {gpu_positional} and --gpu {gpu}; give one")
    if gpus is None and gpu_positional is not None:
        gpus = parse_gpus(str(gpu_positional))
    if cpu and gpus:
        fail("--cpu and a GPU were both given; choose one")
    if cpu_workers > 1 and gpus:
        fail("--cpu-workers is for CPU training; with GPUs use --jobs-per-gpu")
    if address and backend != "ray":
        fail("--address is for --backend ray")
    exp = load_experiment(experiment, config_file=config, overrides=set_parameters)  # imports no framework
    show_notes(exp.notes)
    device_note = ""
    slurm_settings = None
    if backend == "slurm":
        from .executors.slurm_settings import SlurmSettings

        slurm_settings = SlurmSettings.from_config(exp.config.section("slurm"), slurm)
    elif gpus is None and not cpu and exp.gpu_ID is not None and cpu_workers == 1:
        gpus = [exp.gpu_ID]
        if not _gpus_exist(gpus, f"gpu_ID = {exp.gpu_ID} in {experiment}", backend, address):
            device_note = f"gpu_ID = {exp.gpu_ID} in {exp.path}: no GPU on this machine, training on the CPU"
            gpus, cpu = None, True
    elif gpus is not None:
        _gpus_exist(gpus, f"--gpu {','.join(map(str, gpus))}", backend, address)
    options = RunOptions(
        first=first, last=last,
        overwrite=exp.overwrite_results if overwrite is None else overwrite,
        debug=exp.debug_mode if debug is None else debug,
        num_folds=folds, gpus=None if cpu else gpus, jobs_per_gpu=jobs_per_gpu,
        cpu_workers=1 if gpus else cpu_workers, backend=backend, address=address, quiet=quiet,
        device_note=device_note, slurm=slurm_settings, detach=detach, fuse=fuse,
    )
    workers = backend in ("ray", "slurm") or cpu_workers > 1 or (gpus is not None and (len(gpus) > 1 or jobs_per_gpu > 1))
    # A long Keras run on one chosen device trains in a recycled worker (runner.KERAS_WORKER_FROM)
    workers = workers or trains_in_worker(exp, options, on_cpu=cpu)
    if workers:
        keep_this_process_off_gpus()  # the workers own the devices
    else:
        choose_device_early(gpu=gpus[0] if gpus else None, cpu=cpu)
    _set_debug(options.debug)
    if options.debug:  # jobs (here, in workers, in Ray tasks) then leave the frameworks' output on the console
        os.environ["XVAL_DEBUG"] = "1"
    summary = run_experiment(exp, options, console=console)
    raise typer.Exit(0 if summary.ok else 1)


def _gpus_exist(gpus: list[int], source: str, backend: str, address: Optional[str]) -> bool:
    """Whether the GPUs asked for are on this machine (devices.check_requested_gpus: an explicit
    GPU that is not is an error naming the visible ones); a Ray cluster's GPUs are its nodes' to check."""
    from .devices import check_requested_gpus

    if backend == "ray" and address:
        return True
    return check_requested_gpus(gpus, source)


# --- preprocess commands (issue 3) ---
preprocess_app = typer.Typer(
    help="Audio corpora to datasets of features (time, frequency) for `xval run`.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(preprocess_app, name="preprocess")

NameOption = Annotated[
    Optional[str], typer.Option("--name", help="Dataset name: written as <data folder>/<NAME>.xvd/.")
]
FeaturesOption = Annotated[
    Optional[str], typer.Option("--features", help="stft, mfcc, mel or cqt (default: features_type in config.ini).")
]
JobsOption = Annotated[
    Optional[int], typer.Option("--jobs", help="Worker processes (default: all cores).", min=1)
]


LabelsOption = Annotated[
    Optional[str], typer.Option("--labels", help="Classes to keep, in this order, after --merge "
                                "(neu,hap,ang,sad); files of other labels are dropped and counted. Default: "
                                "the corpus's protocol (all its labels, or IEMOCAP's four), or 'all'.")
]
MergeOption = Annotated[
    Optional[list[str]], typer.Option("--merge", help="LABEL=CLASS: files labelled LABEL count as CLASS "
                                      "(repeat it, or a=b,c=d). Default: the corpus's protocol (IEMOCAP: "
                                      "exc=hap); 'none' merges nothing.")
]


def _preprocess(corpus_kind: str, input_dir: Optional[Path], name: str, features: Optional[str],
                jobs: Optional[int], config: Optional[Path], demo_output: Optional[Path] = None,
                labels: Optional[str] = None, merge: Optional[list[str]] = None, rest: Optional[str] = None,
                regex: Optional[str] = None, template: Optional[str] = None,
                preset_options: Optional[dict] = None) -> None:
    """Shared body of the preprocess commands: config -> spec -> corpus -> dataset."""
    from .audio import corpora, datasets
    from .audio.features import FeatureSpec
    from .audio.preprocess import run_with_progress
    from .audio.runtime import default_jobs
    from .config import load_config

    cfg = load_config(config)
    overrides = {"features_type": features}
    if corpus_kind == "demo":
        overrides["fix_length"] = DEMO_DURATION  # one datapoint per whole demo utterance
    spec = FeatureSpec.from_config(cfg.section("features"), **overrides)
    if corpus_kind == "demo":
        wav_folder = demo_output or cfg.data_folder / "demo_wav"
        corpus = datasets.demo(wav_folder, sr=DEMO_SR, duration=DEMO_DURATION)
    else:
        selection = dict(labels=corpora.parse_labels(labels), merge=corpora.parse_merge(merge), rest=rest)
        if corpus_kind == "ravdess":
            corpus = datasets.ravdess(input_dir or cfg.data_folder / "RAVDESS", **selection)
        else:
            preset = (corpora.Pattern(regex, template) if corpus_kind == "pattern"
                      else corpora.PRESETS[corpus_kind](**(preset_options or {})))
            corpus = corpora.read(preset, input_dir, **selection)
    run_with_progress(corpus, spec, cfg.data_folder, name, jobs or default_jobs(), console)


DEMO_SR, DEMO_DURATION = 16000, 1.0


@preprocess_app.command("ravdess")
@user_errors(interrupted=PREPROCESS_INTERRUPTED)
def preprocess_ravdess(
    input_dir: Annotated[
        Optional[Path],
        typer.Option("--input", help="The RAVDESS folder: Actor_01..Actor_24, or flat (default: <data folder>/RAVDESS)."),
    ] = None,
    name: NameOption = None,
    features: FeaturesOption = None,
    jobs: JobsOption = None,
    config: ConfigOption = None,
    labels: LabelsOption = None,
    merge: MergeOption = None,
) -> None:
    """A RAVDESS corpus: label = emotion EE of MM-VV-EE-II-SS-RR-AA.wav, foldable item = actor AA.

    `xval preprocess ravdess --input ~/RAVDESS --features mfcc` writes the folder ravdess.xvd/
    (memory-mapped .npy files and manifest.json) in the data folder (config.ini, section paths).
    Feature parameters come from config.ini, section features.
    """
    _preprocess("ravdess", input_dir, name or "ravdess", features, jobs, config, labels=labels, merge=merge)


@preprocess_app.command("folder")
@user_errors(interrupted=PREPROCESS_INTERRUPTED)
def preprocess_folder(
    input_dir: Annotated[Path, typer.Option("--input", help="DIR laid out as DIR/<foldable item>/<label>/*.wav.")],
    name: NameOption = None,
    features: FeaturesOption = None,
    jobs: JobsOption = None,
    config: ConfigOption = None,
    labels: LabelsOption = None,
    merge: MergeOption = None,
) -> None:
    """Any corpus laid out as DIR/<foldable item>/<label>/*.wav (classes: the label folders, sorted).

    The dataset is named after DIR unless --name is given.
    """
    _preprocess("folder", input_dir, name or input_dir.resolve().name, features, jobs, config,
                labels=labels, merge=merge)


@preprocess_app.command("demo")
@user_errors(interrupted=PREPROCESS_INTERRUPTED)
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


# --- preprocess presets for more corpora (issue 21): parsers in audio/corpora.py ---
InputOption = Annotated[Path, typer.Option("--input", help="The corpus folder, as published.")]


@preprocess_app.command("emodb")
@user_errors(interrupted=PREPROCESS_INTERRUPTED)
def preprocess_emodb(input_dir: InputOption, name: NameOption = None, features: FeaturesOption = None,
                     jobs: JobsOption = None, config: ConfigOption = None, labels: LabelsOption = None,
                     merge: MergeOption = None) -> None:
    """EMO-DB (Berlin), files like 03a01Fa.wav: label = emotion letter (7 classes), foldable item = speaker 03.

    Classes in the order W L E A F T N: anger, boredom, disgust, fear, happiness, sadness, neutral.
    Dataset emodb unless --name is given.
    """
    _preprocess("emodb", input_dir, name or "emodb", features, jobs, config, labels=labels, merge=merge)


@preprocess_app.command("tess")
@user_errors(interrupted=PREPROCESS_INTERRUPTED)
def preprocess_tess(input_dir: InputOption, name: NameOption = None, features: FeaturesOption = None,
                    jobs: JobsOption = None, config: ConfigOption = None, labels: LabelsOption = None,
                    merge: MergeOption = None) -> None:
    """TESS (Toronto), folders OAF_angry/OAF_back_angry.wav: label = emotion of the folder, foldable item = speaker.

    TESS has two speakers (OAF, YAF): grouped k-fold by speaker could at most use k = 2, which
    leaves no validation speaker, so `xval run` cannot split it by item; the summary says so. Its
    protocol, leave-one-speaker-out validated within the training speaker, is the experiment's
    folds = 'leave_one_group_out' with validation = 'within_training_items'.
    """
    _preprocess("tess", input_dir, name or "tess", features, jobs, config, labels=labels, merge=merge)


@preprocess_app.command("fsdd")
@user_errors(interrupted=PREPROCESS_INTERRUPTED)
def preprocess_fsdd(input_dir: InputOption, name: NameOption = None, features: FeaturesOption = None,
                    jobs: JobsOption = None, config: ConfigOption = None, labels: LabelsOption = None,
                    merge: MergeOption = None) -> None:
    """Free Spoken Digit Dataset, files {digit}_{speaker}_{index}.wav: label = digit, foldable item = speaker."""
    _preprocess("fsdd", input_dir, name or "fsdd", features, jobs, config, labels=labels, merge=merge)


@preprocess_app.command("speechcommands")
@user_errors(interrupted=PREPROCESS_INTERRUPTED)
def preprocess_speechcommands(
    input_dir: InputOption, name: NameOption = None, features: FeaturesOption = None,
    jobs: JobsOption = None, config: ConfigOption = None,
    labels: Annotated[Optional[str], typer.Option("--labels", help="Words to keep (yes,no,up,down); default all.")] = None,
    merge: MergeOption = None,
    unknown: Annotated[bool, typer.Option("--unknown", help="Put every other word in a class 'unknown' "
                                          "instead of dropping it.")] = False,
) -> None:
    """Speech Commands, <word>/{speaker hash}_nohash_{n}.wav: label = word, foldable item = speaker hash.

    _background_noise_ is not a class (its files are ignored and counted); validation_list.txt and
    testing_list.txt are not used, since the folds are grouped by speaker.
    """
    _preprocess("speechcommands", input_dir, name or "speechcommands", features, jobs, config, labels=labels,
                merge=merge, rest="unknown" if unknown else None)


@preprocess_app.command("iemocap")
@user_errors(interrupted=PREPROCESS_INTERRUPTED)
def preprocess_iemocap(input_dir: InputOption, name: NameOption = None, features: FeaturesOption = None,
                       jobs: JobsOption = None, config: ConfigOption = None, labels: LabelsOption = None,
                       merge: MergeOption = None,
                       group: Annotated[str, typer.Option("--group", help="Foldable item: session (Ses01, five; "
                                                          "the usual leave-one-session-out) or speaker (Ses01F, ten).")]
                       = "session") -> None:
    """IEMOCAP, Session{n}/sentences/wav/<dialog>/<utterance>.wav: label from dialog/EmoEvaluation,
    foldable item = session (Ses01 ... Ses05), or speaker with --group speaker (Ses01F, ten speakers).

    Default: the common protocol, leave-one-session-out over four classes, --labels neu,hap,ang,sad
    --merge exc=hap; files of the other labels are dropped and counted in the manifest. --labels all
    --merge none keeps all eleven. A session's two actors share its dialogues: grouping by speaker
    can test one while the other trains.
    """
    _preprocess("iemocap", input_dir, name or "iemocap", features, jobs, config, labels=labels, merge=merge,
                preset_options={"group": group})


@preprocess_app.command("pattern")
@user_errors(interrupted=PREPROCESS_INTERRUPTED)
def preprocess_pattern(
    input_dir: Annotated[Path, typer.Option("--input", help="The corpus folder.")],
    regex: Annotated[Optional[str], typer.Option("--regex", help="Regular expression with named groups item and "
                     "label, matched against each file's whole path below --input (/ between folders).")] = None,
    template: Annotated[Optional[str], typer.Option("--template", help="Instead of --regex: a glob-like path "
                        "with {item} and {label}, e.g. '**/{item}/{label}_*.wav' (* any characters but /, "
                        "** any folders, ? one character).")] = None,
    name: NameOption = None, features: FeaturesOption = None, jobs: JobsOption = None,
    config: ConfigOption = None, labels: LabelsOption = None, merge: MergeOption = None,
) -> None:
    """Any corpus, named by a regex or a template: `--template '{item}/{label}_*.wav'` or
    `--regex '(?P<item>[^/]+)/(?P<label>\\w+)_\\d+\\.wav'`.

    A file whose path does not match is skipped and named. Classes: the labels found, sorted (or
    --labels). The dataset is named after DIR unless --name is given.
    """
    _preprocess("pattern", input_dir, name or input_dir.resolve().name, features, jobs, config, labels=labels,
                merge=merge, regex=regex, template=template)


# --- augment command (issue 4) ---
@app.command()
@user_errors(interrupted="every output written so far is complete, but no log was written; rerun with --overwrite")
def augment(
    in_dir: Annotated[Path, typer.Argument(metavar="IN", help="Folder of audio files (searched recursively).")],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="Output folder, outside IN.")],
    n: Annotated[int, typer.Argument(metavar="N", help="Augmented versions per file (>= 1).")],
    seed: Annotated[
        Optional[int], typer.Option("--seed", help="Seed: the same seed gives bit-identical outputs (default: random, logged).")
    ] = None,
    jobs: Annotated[
        Optional[int], typer.Option("--jobs", "-j", help="Files processed in parallel (worker processes; default: all cores).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace outputs that already exist.")] = False,
    config: ConfigOption = None,
) -> None:
    """Write N randomly augmented versions of every audio file under IN to OUT.

    Reads wav, flac, ogg and mp3; stereo is mixed to mono and the sample rate kept. For IN/sub/x.wav
    it writes OUT/sub/x_aug1.wav ... x_augN.wav and OUT/sub/x_orig.wav (the original, peak-normalised;
    24-bit wavs),
    so labels and foldable items in the names survive. Each version applies a random non-empty subset
    of noise, EQ, reverb and time stretch, in random order, then peak normalisation; the ranges are in
    config.ini, section augmentation (stretch_quality: fast, balanced or high). OUT/augment_log.json
    records every value drawn and the seed.

    Unreadable files are skipped with a warning; the exit status is then 1 (2 for a usage error).
    """
    from .audio.augment import AugmentSpec
    from .audio.augment_files import run_augment
    from .audio.runtime import default_jobs
    from .config import load_config

    spec = AugmentSpec.from_config(load_config(config).section("augmentation"))
    summary = run_augment(in_dir, out_dir, n, spec, seed=seed, jobs=default_jobs() if jobs is None else jobs,
                          overwrite=overwrite, console=console)
    speed = summary.seconds_out / summary.wall_seconds if summary.wall_seconds else 0.0
    line = (
        f"augmented {summary.files} files into {summary.outputs} outputs in {escape(str(out_dir))} "
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
    plots: Annotated[str, typer.Option("--plots", metavar="WHICH", help=(
        "Which PNG plots to draw: best (the default: the summary plots and every instance's plot, or from 24 "
        "instances on, those of the 24 best by the selection metric and of failed or diverged ones), all "
        "(every instance's plot), none."))] = "best",
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Draw no plots (--plots none).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if nothing changed since the last report.")] = False,
    config: ConfigOption = None,
) -> None:
    """Rebuild the spreadsheet, results.csv, summary.csv and plots of an experiment from its folder.

    Works on a finished, running or crashed experiment; instances with missing or failed folds are marked.
    A report is left as it is when nothing it is built from (results, [report] settings, xvalkit) and
    none of its files changed since it was written; --force rebuilds it anyway.

    `xval report exp1` finds experiments/exp1.py; a folder holding results/ works too.
    """
    from .report import open_store, refresh

    if plots not in ("best", "all", "none"):
        fail(f"--plots {plots}: use best, all or none")
    store, exp_config = open_store(experiment, config_file=config)
    if exp_config is None and config is not None:
        from .config import load_config

        exp_config = load_config(config)
    files = refresh(store, plots=plots != "none" and not no_plots, config=exp_config, force=force,
                    every_plot=plots == "all")
    from .config import selection_notes
    from .report import report_settings

    show_notes(selection_notes(report_settings(store, exp_config)))
    state = "" if files.rebuilt else " (up to date: nothing changed since it was written; --force rebuilds it)"
    console.print(f"report of {escape(str(store.folder))}{state}:\n  {files.spreadsheet.name}, {files.results_csv.name}, "
                  f"{files.summary_csv.name}" + (f", {len(files.plots)} plot(s) in plots/" if files.plots else ""),
                  soft_wrap=True)


# --- plan and status commands (issue 7) ---
@app.command()
@user_errors
def plan(
    experiment: ExperimentArg,
    first: FirstArg = None,
    last: LastArg = None,
    gpu: Annotated[Optional[str], typer.Option("--gpu", help="GPU(s) the run would use, e.g. 0,1.")] = None,
    jobs_per_gpu: JobsPerGpuOption = 1,
    cpu_workers: CpuWorkersOption = 1,
    folds: Annotated[Optional[int], typer.Option("--folds", help="Number of folds (overrides num_folds).")] = None,
    fuse: FuseOption = None,
    set_parameters: SetOption = None,
    config: ConfigOption = None,
    build: Annotated[bool, typer.Option("--build", help="Also build each distinct model once (imports its "
                                        "framework: seconds), as `xval run` does before training.")] = False,
) -> None:
    """Validate an experiment and show what `xval run` would do, without training.

    Checks every parameter, the dataset and the folds (with --build, every architecture too: each
    model is built once); prints the parameters that differ between instances, the folds to train
    and those already done, and the devices the jobs would go to.
    """
    from .devices import keep_this_process_off_gpus
    from .experiment import load_experiment
    from .status import print_plan

    keep_this_process_off_gpus()
    exp = load_experiment(experiment, config_file=config, overrides=set_parameters)
    show_notes(exp.notes)
    gpus = parse_gpus(gpu) if gpu else None
    print_plan(exp, first, last, folds, gpus, jobs_per_gpu, cpu_workers, build, fuse=fuse)


@app.command()
@user_errors
def status(
    experiment: ExperimentArg,
    first: FirstArg = None,
    last: LastArg = None,
    config: ConfigOption = None,
) -> None:
    """Done, failed (with the error's last line), running and pending folds, per instance."""
    from .experiment import load_experiment
    from .status import print_status

    exp = load_experiment(experiment, config_file=config)
    show_notes(exp.notes)
    print_status(exp, exp.select(first, last) if first is not None else None)


# --- convert command (issue 11) ---
@app.command()
@user_errors(interrupted="nothing was written: a dataset is saved whole or not at all")
def convert(
    predictors: Annotated[Path, typer.Argument(metavar="OLD_predictors.npy", help="Predictors dict saved with np.save.")],
    target: Annotated[Path, typer.Argument(metavar="OLD_target.npy", help="Targets dict saved with np.save.")],
    name: Annotated[str, typer.Option("--name", help="Name of the new dataset in the data folder.")],
    trust_pickle: Annotated[bool, typer.Option(
        "--trust-pickle", help="Allow unpickling the two files (unpickling can run code: only for files you trust).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a dataset of that name.")] = False,
    config: ConfigOption = None,
) -> None:
    """Convert an original-scripts dataset (dicts {foldable item: array} saved with np.save) to NAME.

    Writes the folder NAME.xvd/ into the data folder (one-hot targets become class indices), with a
    manifest.json that records the source files and their SHA-256. The old files are pickles, so
    nothing is read without --trust-pickle.
    """
    from .config import load_config
    from .convert import convert as convert_dataset

    folder = load_config(config).data_folder
    done = convert_dataset(predictors, target, name, folder, trust_pickle=trust_pickle, overwrite=overwrite)
    classes = f", one-hot targets -> indices of {done['classes']} classes" if done["classes"] else ""
    console.print(f"dataset '{escape(name)}': {done['items']} foldable items, {done['datapoints']} datapoints of "
                  f"shape {done['shape']}{classes}, written to {escape(str(folder))}", soft_wrap=True)


# --- export commands (issue 17) ---
export_app = typer.Typer(help="Copy an experiment folder into other tools.", no_args_is_help=True,
                         rich_markup_mode=None)
app.add_typer(export_app, name="export")


@export_app.command("mlflow")
@user_errors(interrupted="the runs exported so far are kept; rerun the same command to finish (nothing is duplicated)")
def export_mlflow(
    experiment: Annotated[
        str, typer.Argument(metavar="EXP", help="Experiment module (experiments/exp1.py), name (exp1) or folder.")
    ],
    tracking_uri: Annotated[
        Optional[str],
        typer.Option("--tracking-uri", help="MLflow tracking URI, e.g. http://mlflow.lab:5000 (default: sqlite "
                     "file mlflow.db beside the experiment folder)."),
    ] = None,
    experiment_name: Annotated[
        Optional[str], typer.Option("--experiment-name", help="MLflow experiment (default: <dataset>_exp<N>).")
    ] = None,
    models: Annotated[bool, typer.Option("--models", help="Also upload every fold's model file.")] = False,
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="Rebuild the workbook, csv files and plots first (default: yes).")
    ] = True,
    config: ConfigOption = None,
) -> None:
    """Mirror an experiment folder into MLflow: a run per instance, a nested run per fold, a report run.

    Rebuilt from the folder alone, so it works on finished, running or crashed experiments. Exporting
    again updates the same runs (found by their xvalkit.* tags) and adds new folds and instances.
    Needs the optional extra: pip install -e ".[mlflow]".
    """
    from .mlflow_export import export
    from .report import open_store

    store, exp_config = open_store(experiment, config_file=config)
    if exp_config is None and config is not None:
        from .config import load_config

        exp_config = load_config(config)
    done = export(store, exp_config, tracking_uri=tracking_uri, experiment_name=experiment_name, models=models,
                  report=report)
    counts = ", ".join(f"{n} {what}" for what, n in sorted(done.counts.items())) or "nothing to do"
    console.print(f"exported {store.folder} to MLflow experiment {escape(done.experiment_name)!s} "
                  f"(id {done.experiment_id}) at {escape(done.tracking_uri)}: runs {counts}", soft_wrap=True)


# --- convert-npz command (issue 15) ---
@app.command("convert-npz")
@user_errors
def convert_npz(
    name: Annotated[str, typer.Argument(help="Dataset name: <data folder>/<NAME>_predictors.npz and _target.npz.")],
    data_folder: Annotated[Optional[Path], typer.Option("--data-folder", help="Default: config.ini's data_folder.")] = None,
    config: ConfigOption = None,
) -> None:
    """Turn a dataset's .npz files into the memory-mapped format <NAME>.xvd/, then remove them.

    One item is in memory at a time; the new folder appears whole or not at all. Workers then map
    it read-only and share one copy in the page cache, and `generator = True` runs in bounded memory.
    """
    from .config import load_config
    from .data import convert_npz as convert

    folder = convert(data_folder or load_config(config).data_folder, name)
    console.print(f"converted dataset '{escape(name)}' to {escape(str(folder))} (the .npz files are removed)",
                  soft_wrap=True)


# --- reproduce command (issue 31) ---
@app.command()
@user_errors(interrupted="nothing in the experiment folder was changed")
def reproduce(
    experiment: Annotated[
        str, typer.Argument(metavar="EXP", help="Experiment module (experiments/exp1.py), name (exp1) or folder.")
    ],
    instance: Annotated[Optional[int], typer.Argument(metavar="INSTANCE", help="Instance (default: every instance).")] = None,
    fold: Annotated[Optional[int], typer.Argument(metavar="FOLD", help="Fold (default: one of the instance's, at random).")] = None,
    trust_code: Annotated[bool, typer.Option("--trust-code", help="Run the snapshot's code of a folder you did not create.")] = False,
    gpu: Annotated[Optional[int], typer.Option("--gpu", help="GPU to train on (default: GPU 0 if there is one, else the CPU).")] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="Train on the CPU even if a GPU is present.")] = False,
    config: ConfigOption = None,
) -> None:
    """Train finished folds again from what the experiment folder recorded and compare their numbers.

    Each fold is trained again in a temporary folder from the code snapshot of the run that trained
    it (not the current files), with its recorded parameters, items and seed, on the same data
    (checked against the SHA-256 in its record). One line per fold: identical (bit for bit, in the
    same environment), equal within tolerance (naming what differs in the environment), or
    different (with the first epoch where the histories part). Exit status 0 when every fold was
    reproduced, 1 otherwise. The snapshot's code runs: for a folder you did not create, read it
    and pass --trust-code.
    """
    from .devices import choose_device_early
    from .report import open_store
    from .reproduce import reproduce_experiment

    if cpu and gpu is not None:
        fail("--cpu and --gpu were both given; choose one")
    store, _ = open_store(experiment, config_file=config)
    choose_device_early(gpu=gpu, cpu=cpu)
    raise typer.Exit(0 if reproduce_experiment(store, instance, fold, trust_code, console) else 1)


def _set_debug(value: bool) -> None:
    global _DEBUG
    _DEBUG = value


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `xval` script."""
    app(args=argv)


if __name__ == "__main__":
    main()
