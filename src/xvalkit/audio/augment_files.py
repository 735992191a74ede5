"""`xval augment IN OUT N`: augment every audio file under IN into OUT, reproducibly and in parallel.

For IN/sub/x.wav it writes OUT/sub/x_orig.wav (peak-normalised) and OUT/sub/x_aug1.wav ...
x_augN.wav, then OUT/augment_log.json with the transforms and values drawn for every output.

Each file's random numbers come from (seed, its path relative to IN), never from the order in which
files are processed, so any --jobs gives bit-identical outputs. Workers write their own outputs and
send back only the small record: sending the arrays back to the parent would cost more than the work.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic
from ..errors import XvalError
from ..faults import faults_stop
from ..interrupts import StopRequest
from .augment import AugmentSpec, augment, impulse_response_files, peak_normalize
from .io import AUDIO_EXTENSIONS, AudioReadError, find_audio_files, read_audio, write_wav
from .runtime import fork_is_safe, one_blas_thread_while_pooling, set_up_pool_worker

LOG_NAME = "augment_log.json"
# 24-bit PCM, not float: libsndfile stamps float wavs with the time of writing (PEAK chunk), which
# would break bit-identical reruns; outputs peak at <= 0 dBFS, so nothing clips, and 24 bits is
# 144 dB of range.
SUBTYPE = "PCM_24"


@dataclass(frozen=True)
class FileTask:
    """One source file: where it is, its path relative to IN (which names its outputs and seed)."""

    source: Path
    relative: str  # posix path relative to IN, e.g. "actor01/03-01-01.wav"
    out_dir: Path
    n: int
    seed: int
    spec: AugmentSpec

    @property
    def stem(self) -> str:
        return Path(self.relative).stem

    def output_names(self) -> list[str]:
        return [f"{self.stem}_orig.wav"] + [f"{self.stem}_aug{k}.wav" for k in range(1, self.n + 1)]

    def output_paths(self) -> list[Path]:
        parent = self.out_dir / Path(self.relative).parent
        return [parent / name for name in self.output_names()]


@dataclass
class Summary:
    """What a run did: counted by the CLI into one line and an exit status."""

    seed: int
    files: int = 0
    outputs: int = 0
    seconds_in: float = 0.0
    seconds_out: float = 0.0  # augmented versions only
    wall_seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, why)

    @property
    def ok(self) -> bool:
        return not self.skipped


def file_seed(seed: int, relative: str) -> np.random.SeedSequence:
    """The seed sequence of one file: a stable hash of its relative path (not Python's hash())."""
    digest = hashlib.blake2b(relative.encode("utf-8"), digest_size=8).digest()
    return np.random.SeedSequence([seed, int.from_bytes(digest, "little")])


def plan(in_dir: Path, out_dir: Path, n: int, seed: int, spec: AugmentSpec, overwrite: bool) -> list[FileTask]:
    """Check IN, OUT, N and existing outputs; return one task per audio file. Writes nothing."""
    if n < 1:
        raise XvalError(f"N = {n}: the number of augmented versions per file must be at least 1")
    if not in_dir.exists():
        raise XvalError(f"IN {in_dir}: no such folder")
    if not in_dir.is_dir():
        raise XvalError(f"IN {in_dir}: not a folder; give the folder that holds the audio files")
    in_resolved, out_resolved = in_dir.resolve(), out_dir.resolve()
    if out_resolved == in_resolved or in_resolved in out_resolved.parents:
        raise XvalError(f"OUT {out_dir} is inside IN {in_dir}; choose an output folder outside IN")
    if out_dir.exists() and not out_dir.is_dir():
        raise XvalError(f"OUT {out_dir}: exists and is not a folder")
    sources = find_audio_files(in_dir)
    if not sources:
        raise XvalError(f"IN {in_dir}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found in it or below")
    tasks = [FileTask(p, p.relative_to(in_dir).as_posix(), out_dir, n, seed, spec) for p in sources]
    _check_outputs(tasks, out_dir, overwrite)
    return tasks


def _check_outputs(tasks: list[FileTask], out_dir: Path, overwrite: bool) -> None:
    """Two sources that would write the same output, or outputs already there without --overwrite."""
    owners: dict[Path, str] = {}
    for task in tasks:
        for path in task.output_paths():
            if path in owners:
                raise XvalError(
                    f"{owners[path]} and {task.relative} would both write {path}; rename one of them"
                )
            owners[path] = task.relative
    if overwrite:
        return
    existing = [p for p in [*owners, out_dir / LOG_NAME] if p.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise XvalError(f"{existing[0]} already exists{more}; pass --overwrite to replace the outputs")


def check_sources(spec: AugmentSpec) -> None:
    """Read the noise file and impulse responses once, so a bad one stops the run before any write."""
    paths = [spec.noise_file] if spec.noise_file else []
    if spec.impulse_response_folder:
        paths += [str(p) for p in impulse_response_files(spec.impulse_response_folder)]
    for path in paths:
        try:
            read_audio(path)
        except AudioReadError as exc:
            raise XvalError(f"config [augmentation]: {exc}") from None


def augment_file(task: FileTask) -> dict[str, Any]:
    """Read one file and write its _orig and N augmented versions; return its log record.

    An unreadable file returns {"error": ...} and writes nothing.
    """
    try:
        audio, sr = read_audio(task.source)
    except AudioReadError as exc:
        return {"file": task.relative, "error": str(exc)}
    names = task.output_names()
    paths = task.output_paths()
    # a full or read-only OUT raises faults.EnvironmentFault: the run stops (each wav is atomic)
    with faults_stop([task.out_dir]):
        write_wav(paths[0], peak_normalize(audio, task.spec.peak_dbfs), sr, SUBTYPE)
    outputs = {names[0]: {"transforms": [], "seconds": audio.size / sr}}
    # one child seed per version, so version k does not depend on N
    for name, path, child in zip(names[1:], paths[1:], file_seed(task.seed, task.relative).spawn(task.n)):
        augmented, record = augment(audio, sr, np.random.default_rng(child), task.spec)
        with faults_stop([task.out_dir]):
            write_wav(path, augmented, sr, SUBTYPE)
        outputs[name] = {"transforms": record, "seconds": augmented.size / sr}
    return {"file": task.relative, "sample_rate": sr, "seconds": audio.size / sr, "outputs": outputs}


def run_augment(
    in_dir: Path, out_dir: Path, n: int, spec: AugmentSpec, seed: int | None = None,
    jobs: int = 1, overwrite: bool = False, console=None,
) -> Summary:
    """Augment every audio file under `in_dir` into `out_dir`; print progress and warnings."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if jobs < 1:
        raise XvalError(f"--jobs {jobs}: give 1 or more worker processes")
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])  # recorded in the log
    tasks = plan(in_dir, out_dir, n, seed, spec, overwrite)
    check_sources(spec)
    if out_dir.is_dir():
        atomic.remove_left_behind(out_dir)  # the temporary wavs of a killed run
    console = console or Console(stderr=True, highlight=False)
    summary = Summary(seed=seed)
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    jobs = min(jobs, len(tasks))
    # The pool starts before the progress bar's refresh thread, inside a one-BLAS-thread limit that
    # forked workers inherit and that lasts until they are gone (see audio.runtime).
    with StopRequest("stopping after the files in progress") as stop, \
            one_blas_thread_while_pooling() if jobs > 1 else contextlib.nullcontext():
        pool = _Pool(jobs) if jobs > 1 else None
        try:
            results = pool.results(tasks, stop) if pool else _one_by_one(tasks, stop)
            columns = (TextColumn("augmenting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            with Progress(*columns, console=console, transient=True) as progress:
                bar = progress.add_task("augment", total=len(tasks))
                for result in results:
                    if "error" in result:
                        progress.console.print(f"[yellow]warning:[/] {escape(result['error'])}; skipped", soft_wrap=True)
                        summary.skipped.append((result["file"], result["error"]))
                    else:
                        records.append(result)
                    progress.advance(bar)
        finally:
            if pool:
                pool.stop()
    summary.wall_seconds = time.perf_counter() - start
    summary.files = len(records)
    summary.outputs = sum(len(r["outputs"]) for r in records)
    summary.seconds_in = sum(r["seconds"] for r in records)
    # audio produced = the augmented versions; the _orig copies (no transforms) are not counted
    summary.seconds_out = sum(o["seconds"] for r in records for o in r["outputs"].values() if o["transforms"])
    with faults_stop([out_dir]):
        write_log(out_dir, n, spec, summary, records)
    return summary


def _one_by_one(tasks: list[FileTask], stop: StopRequest):
    for task in tasks:
        stop.check()
        yield augment_file(task)


class _Pool:
    """Worker processes (forked on Linux, spawned elsewhere) that augment files; on Ctrl-C each
    finishes the file it is writing.

    Terminating a worker mid-write would leave a temporary file behind, so stopping sets an event
    that makes the files not yet started return at once, then waits for the ones in progress.
    """

    def __init__(self, jobs: int):
        fork = fork_is_safe()  # forked before the progress bar's thread starts
        context = multiprocessing.get_context("fork" if fork else "spawn")
        self.stopping = context.Event()
        self.pool = context.Pool(jobs, initializer=_init_worker, initargs=(self.stopping, fork))

    def results(self, tasks: list[FileTask], stop: StopRequest):
        """The results as they come, checking for Ctrl-C while waiting."""
        iterator = self.pool.imap_unordered(_augment_unless_stopping, tasks)
        while True:
            stop.check()  # before every result, not only while waiting: results can come fast
            try:
                result = iterator.next(timeout=0.2)
            except multiprocessing.TimeoutError:
                continue
            except StopIteration:
                return
            yield result

    def stop(self) -> None:
        self.stopping.set()
        self.pool.close()
        self.pool.join()


_STOPPING = None  # a worker's copy of _Pool.stopping


def _init_worker(stopping, forked: bool) -> None:
    global _STOPPING
    _STOPPING = stopping
    set_up_pool_worker(forked)


def _augment_unless_stopping(task: FileTask) -> dict[str, Any]:
    if _STOPPING.is_set():
        return {"file": task.relative, "error": "not started: interrupted"}
    return augment_file(task)


def write_log(out_dir: Path, n: int, spec: AugmentSpec, summary: Summary, records: list[dict]) -> None:
    """OUT/augment_log.json: seed, settings, and per output the transforms in order with their values."""
    from dataclasses import asdict

    log = {
        "seed": summary.seed,
        "n": n,
        "settings": asdict(spec),
        "files": sorted(records, key=lambda r: r["file"]),
        "skipped": [{"file": f, "error": e} for f, e in sorted(summary.skipped)],
    }
    atomic.write_text(out_dir / LOG_NAME, _one_line_per_entry(log))


def _one_line_per_entry(log: dict[str, Any]) -> str:
    """JSON with each file's record on one line: readable, diffable, and written by json's C
    encoder (indent= makes json use its pure-Python encoder, 10x slower on big logs)."""
    lines = []
    for key, value in log.items():
        if isinstance(value, list):
            items = ",\n  ".join(json.dumps(item) for item in value)
            lines.append(f"{json.dumps(key)}: [\n  {items}\n ]" if value else f"{json.dumps(key)}: []")
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value)}")
    return "{\n " + ",\n ".join(lines) + "\n}\n"
