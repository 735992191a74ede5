"""The `xval preprocess` pipeline: a corpus's files -> features in parallel -> one saved dataset.

Workers are a process pool (one BLAS thread each). On Linux they are forked from a parent that
has already run librosa once, so they inherit its compiled numba code instead of each loading or
compiling it. Each task is a chunk of files, to keep the per-task overhead small. Files that
cannot be used are skipped with a reason; the dataset is written only at the end, atomically
(data.save_dataset), so a failure never leaves half a dataset.
"""

from __future__ import annotations

import mmap
import multiprocessing
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from .. import data
from ..errors import XvalError
from ..faults import faults_stop
from ..interrupts import StopRequest
from .corpora import check_originals
from .datasets import Corpus
from .features import FeatureSpec, features, resample
from .io import AudioReadError, read_audio
from .runtime import fork_is_safe, one_blas_thread_while_pooling, set_up_pool_worker, single_thread_environment

SILENCE_PEAK = 1e-4  # -80 dBFS: below this a file holds nothing to learn from


class SkipFile(Exception):
    """A file that cannot be used; the message says why."""


@dataclass
class Summary:
    """What a preprocess run did: counts, skipped files with reasons, where the dataset went."""

    name: str
    files: int
    done: int = 0
    datapoints: int = 0
    items: int = 0
    shape: tuple[int, ...] = ()
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    resampled_from: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    paths: dict[str, Path] = field(default_factory=dict)
    per_class: dict[str, int] = field(default_factory=dict)  # datapoints per class name
    notes: list[str] = field(default_factory=list)  # the corpus's own lines (files dropped by --labels...)

    def lines(self) -> list[str]:
        rate = self.files / self.seconds if self.seconds else 0.0
        lines = [f"{self.name}: {self.done} of {self.files} files -> {self.datapoints} datapoints "
                 f"{tuple(self.shape)} in {self.items} foldable items, {self.seconds:.1f} s ({rate:.0f} files/s)"]
        if self.resampled_from:
            rates = ", ".join(f"{n} from {sr} Hz" for sr, n in sorted(self.resampled_from.items()))
            lines.append(f"resampled: {rates}")
        if self.per_class:
            lines.append("per class: " + ", ".join(f"{name} {n}" for name, n in self.per_class.items()))
            empty = [name for name, n in self.per_class.items() if not n]
            if empty:
                lines.append(f"no datapoints of class {', '.join(empty)}: the model still gets an output for "
                             "each; keep only the classes present with --labels")
        lines += self.notes + _fold_limit(self.items)
        if self.skipped:
            reasons = Counter(reason.split(" (")[0] for _, reason in self.skipped)
            lines.append(f"skipped {len(self.skipped)}: " + "; ".join(f"{n} {r}" for r, n in reasons.items()))
        if self.paths:
            lines.append(f"saved {self.paths['dataset']} (memory-mapped .npy files, written whole)")
        return lines


def _fold_limit(items: int) -> list[str]:
    """What the number of foldable items allows `xval run` (each fold needs a test, a validation
    and a training item)."""
    if items >= 5 or not items:  # k = 5 or 10 is usual: say nothing when 5 folds are possible
        return []
    if items <= 2:
        return [f"only {items} foldable item(s): grouped folds need at least one test, one validation and one "
                f"training item, so `xval run` cannot split this dataset by item (grouped k-fold could at "
                f"most use k = {items}, which leaves no validation item); with 2, leave-one-out can validate "
                f"within the training item instead: folds = 'leave_one_group_out', validation = "
                f"'within_training_items' (TESS's protocol)"]
    return [f"only {items} foldable items: grouped k-fold with num_folds at most {items}"]


def load(path: str | Path, sr_target: int) -> tuple[np.ndarray, int]:
    """(mono samples at sr_target, original sample rate); SkipFile for unusable audio."""
    try:
        audio, sr = read_audio(path)
    except AudioReadError as exc:
        raise SkipFile(f"unreadable or corrupt ({str(exc).removeprefix(f'{path}: ')})") from None
    peak = np.max(np.abs(audio))  # NaN or inf if any sample is: one pass checks both
    if not np.isfinite(peak):
        raise SkipFile("corrupt (samples that are not finite numbers)")
    if peak < SILENCE_PEAK:
        raise SkipFile("silent (peak below -80 dBFS)")
    return resample(audio, sr, sr_target), sr


def extract(path: str | Path, spec: FeatureSpec) -> tuple[np.ndarray, int]:
    """(features (datapoints, time, frequency), original sample rate) of one file."""
    audio, sr = load(path, spec.sr_target)
    return features(audio, spec), sr


class SharedOutput:
    """Features that forked workers write straight into memory shared with the parent.

    Pickling every array back through a pipe costs about as much as computing an STFT; an
    anonymous shared mapping made before the fork costs nothing. Datapoints per file are planned
    from the file headers, so each file has its rows before any work starts.
    """

    def __init__(self, counts: list[int], shape: tuple[int, int]):
        self.counts = counts
        self.offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        total, size = int(self.offsets[-1]), shape[0] * shape[1]
        buffer = mmap.mmap(-1, max(1, total * size * 4))  # MAP_SHARED | MAP_ANONYMOUS
        self.array = np.frombuffer(buffer, np.float32, count=total * size).reshape(total, *shape)

    @classmethod
    def plan(cls, paths: list[str], spec: FeatureSpec) -> SharedOutput:
        return cls([_planned_datapoints(path, spec) for path in paths], spec.shape)

    def put(self, index: int, x: np.ndarray) -> bool:
        """Store the features of file `index`; False if they do not fit the planned rows (a header
        that promised more samples than the file holds): then the caller sends them back itself."""
        if len(x) != self.counts[index]:
            return False
        self.array[self.offsets[index]:self.offsets[index + 1]] = x
        return True

    def get(self, index: int) -> np.ndarray:
        return self.array[self.offsets[index]:self.offsets[index + 1]]


def _planned_datapoints(path: str, spec: FeatureSpec) -> int:
    """Datapoints of a file from its header (as librosa.resample sizes its output); 0 if unreadable."""
    if not spec.sequence_length:
        return 1  # padded or cropped to one datapoint: no need to open the file here
    try:
        info = sf.info(path)
    except Exception:  # the worker will name the problem
        return 0
    samples = info.frames
    if info.samplerate != spec.sr_target:
        samples = int(np.ceil(samples * float(spec.sr_target) / info.samplerate))
    return spec.datapoints(samples)


_SPEC: FeatureSpec | None = None
_OUTPUT: SharedOutput | None = None  # set in the parent before forking; workers inherit it


def _init_worker(spec: FeatureSpec, pool: str | None = None) -> None:
    """Set up a process to extract: this one (pool None), or a "fork" or "spawn" pool's worker."""
    global _SPEC
    _SPEC = spec
    if pool:
        set_up_pool_worker(forked=pool == "fork")


def _extract_chunk(chunk: list[tuple[int, str]]) -> list[tuple[int, np.ndarray | bool | None, int | str]]:
    """Worker task: (index, features, original sample rate) or (index, None, why it was skipped).

    With a shared output the features go there and True stands in for them.
    """
    results = []
    for index, path in chunk:
        try:
            x, sr = extract(path, _SPEC)
            if _OUTPUT is not None and _OUTPUT.put(index, x):
                x = True
            results.append((index, x, sr))
        except SkipFile as exc:
            results.append((index, None, str(exc)))
    return results


def _chunks(paths: list[str], jobs: int) -> list[list[tuple[int, str]]]:
    """Tasks of files, large first and shrinking (guided scheduling): few tasks to send, and the
    last ones small, so that no worker waits long for another's last task at the end."""
    indexed, chunks, start = list(enumerate(paths)), [], 0
    while start < len(indexed):
        size = max(1, min(32, (len(indexed) - start) // (4 * jobs)))
        chunks.append(indexed[start:start + size])
        start += size
    return chunks


def _pool(spec: FeatureSpec, jobs: int, fork: bool) -> ProcessPoolExecutor:
    single_thread_environment()  # for workers started fresh (spawn/forkserver)
    # fork: workers inherit librosa and its compiled numba code from this (warmed) process.
    context = multiprocessing.get_context("fork" if fork else None)
    return ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker,
                               initargs=(spec, "fork" if fork else "spawn"))


def extract_all(paths: list[str | Path], spec: FeatureSpec, jobs: int = 1,
                progress=None) -> list[tuple[np.ndarray | None, int | str]]:
    """Features of every file, in order: (array, original sr) or (None, reason skipped).

    `progress(n)` is called as files finish. jobs=1 works in this process, without a pool.
    """
    paths = [str(p) for p in paths]
    results: list = [None] * len(paths)
    jobs = max(1, min(jobs, len(paths)))
    with StopRequest("stopping after the files in progress; nothing will be written") as stop:
        if jobs == 1:
            _init_worker(spec)
            for chunk in _chunks(paths, 1):
                stop.check()
                for index, x, info in _extract_chunk(chunk):
                    results[index] = (x, info)
                if progress:
                    progress(len(chunk))
        else:
            _extract_in_pool(paths, spec, jobs, results, progress, stop)
        stop.check()  # a Ctrl-C during the last files
    return results


def _extract_in_pool(paths: list[str], spec: FeatureSpec, jobs: int, results: list, progress,
                     stop: StopRequest) -> None:
    global _OUTPUT
    fork = fork_is_safe()
    features(np.zeros(spec.segment_samples, np.float32), spec)  # warm librosa before forking
    output = _OUTPUT = SharedOutput.plan(paths, spec) if fork else None
    # One BLAS thread in this process from before the workers fork (they inherit it) until
    # they are gone: restoring it earlier wakes OpenBLAS threads that compete with the workers.
    with one_blas_thread_while_pooling():
        executor = _pool(spec, jobs, fork)
        try:
            pending = {executor.submit(_extract_chunk, chunk) for chunk in _chunks(paths, jobs)}
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                stop.check()
                for future in done:
                    chunk = future.result()
                    for index, x, info in chunk:
                        results[index] = (output.get(index) if x is True else x, info)
                    if progress:
                        progress(len(chunk))
        except BaseException:
            _stop_pool(executor, at_once=stop.forced)
            raise
        finally:
            _OUTPUT = None
        executor.shutdown()


def _stop_pool(executor: ProcessPoolExecutor, at_once: bool) -> None:
    """Cancel the files not started and wait for those in progress, or with `at_once` (Ctrl-C
    pressed again, now or meanwhile) kill the workers and wait for the pool to end.

    Never shutdown(wait=False): the pool's manager thread would outlive this call and close its
    wake-up pipe while the interpreter's exit writes to it (CPython 3.11's concurrent.futures checks
    `_closed`, then writes, without a lock), printing "Exception ignored in threading ... OSError:
    Bad file descriptor" after the user's Ctrl-C. Joined here, it has closed the pipe before exit.
    """
    if at_once:
        _kill_workers(executor)
    try:
        executor.shutdown(wait=True, cancel_futures=True)
    except KeyboardInterrupt:
        _kill_workers(executor)
        executor.shutdown(wait=True)
        raise


def _kill_workers(executor: ProcessPoolExecutor) -> None:
    """SIGKILL to every worker. Safe: they write no file, only the shared rows (SIGTERM would only
    end the task in progress, which concurrent.futures catches, and the worker would take the next).
    The pool sees them gone, fails what was pending and ends."""
    kill = getattr(executor, "kill_workers", None)  # Python 3.14
    if kill is not None:
        kill()
        return
    for process in list((executor._processes or {}).values()):
        process.kill()


def _join(parts: list[np.ndarray]) -> np.ndarray:
    """np.concatenate(parts), but without a copy when the parts already lie end to end in one
    buffer (an item's files in consecutive rows of the shared output): copying 60 MB of STFTs
    cost 70 ms, a fifth of extracting them."""
    first = parts[0]
    address = first.__array_interface__["data"][0]
    for part in parts:
        if (part.base is None or part.base is not first.base or not part.flags.c_contiguous
                or part.dtype != first.dtype or part.shape[1:] != first.shape[1:]
                or part.__array_interface__["data"][0] != address):
            return np.concatenate(parts)
        address += part.nbytes
    rows = sum(len(part) for part in parts)
    return np.lib.stride_tricks.as_strided(first, shape=(rows, *first.shape[1:]), writeable=False)


def build_dataset(corpus: Corpus, spec: FeatureSpec, results: list, summary: Summary,
                  warn=None) -> tuple[dict, dict, dict]:
    """Predictors, targets and manifest from the results of `extract_all` on corpus.entries.

    `warn(path, reason)` is called for each file skipped here.
    """
    feats: dict[str, list[np.ndarray]] = {}
    sources: dict[str, list[str]] = {}
    augmented: dict[str, list[bool]] = {}
    starts: dict[str, list[float]] = {}
    labels: dict[str, list[int]] = {}
    step_s = spec.segment_step / spec.sr_target
    for entry, (x, info) in zip(corpus.entries, results):
        if x is None:
            summary.skipped.append((entry.path, info))
            if warn:
                warn(entry.path, info)
            continue
        summary.done += 1
        if info != spec.sr_target:
            summary.resampled_from[info] += 1
        feats.setdefault(entry.item, []).append(x)
        labels.setdefault(entry.item, []).extend([entry.label] * len(x))
        source = str(entry.path.relative_to(corpus.root))
        sources.setdefault(entry.item, []).extend([source] * len(x))
        augmented.setdefault(entry.item, []).extend([entry.augmented] * len(x))
        starts.setdefault(entry.item, []).extend(round(i * step_s, 6) for i in range(len(x)))
    if not feats:
        raise XvalError(f"--input {corpus.root}: none of its {summary.files} audio files is usable "
                        f"(see the warnings above); nothing was written")
    items = sorted(feats)
    # Skipped files can leave an item of copies only
    check_originals(corpus.root, {(item, flag) for item in items for flag in augmented[item]})
    predictors = {item: _join(feats[item]) for item in items}
    targets = {item: np.asarray(labels[item], dtype=np.int64) for item in items}
    summary.items = len(items)
    summary.datapoints = sum(len(t) for t in targets.values())
    summary.shape = spec.shape
    manifest = {
        "name": summary.name,
        "task_type": "classification",
        "classes": corpus.classes,
        "input": str(corpus.root),
        "corpus": corpus.description,
        "features": spec.to_manifest(),
        "sr": spec.sr_target,
        "datapoints_per_item": {item: len(targets[item]) for item in items},
        "sources": {item: sources[item] for item in items},
        # Per datapoint: from an `xval augment` copy (<stem>_aug<N>.wav)? `xval run` trains on every
        # datapoint but validates and tests on the others (the originals) only.
        "augmented": {item: augmented[item] for item in items},
        "skipped": [{"file": str(path), "reason": reason} for path, reason in summary.skipped],
        **_counts(corpus.classes, targets, summary),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if spec.sequence_length:
        manifest["segment_starts_s"] = {item: starts[item] for item in items}
    return predictors, targets, manifest


def _counts(classes: list[str], targets: dict[str, np.ndarray], summary: Summary) -> dict:
    """Datapoints per class and per item and class (class names as keys), for the manifest."""
    per_item = {item: {classes[c]: int(n) for c, n in enumerate(np.bincount(y, minlength=len(classes))) if n}
                for item, y in targets.items()}
    summary.per_class = {name: sum(counts.get(name, 0) for counts in per_item.values()) for name in classes}
    return {"datapoints_per_class": summary.per_class, "datapoints_per_item_and_class": per_item}


def preprocess(corpus: Corpus, spec: FeatureSpec, folder: str | Path, name: str, jobs: int = 1,
               progress=None, warn=None) -> Summary:
    """Extract the features of every file of `corpus` and save dataset `name` in `folder`.

    `progress(n)` is called as n more files are done; `warn(path, reason)` for each skipped file.
    """
    if name in data.BUILTIN_DATASETS:
        raise XvalError(f"--name {name}: that is a built-in dataset's name; choose another")
    start = time.perf_counter()
    for path, reason in corpus.skipped if warn else ():
        warn(path, reason)
    summary = Summary(name=name, files=len(corpus.entries) + len(corpus.skipped),
                      skipped=list(corpus.skipped), notes=list(corpus.notes))
    results = extract_all([e.path for e in corpus.entries], spec, jobs, progress)
    predictors, targets, manifest = build_dataset(corpus, spec, results, summary, warn)
    # A first Ctrl-C now waits until the dataset's folder is written (a second one stops at once:
    # save_dataset renames the folder into place whole, so a half-written dataset does not load).
    # Items are appended straight from the shared extraction buffer: no second copy in RAM.
    # A full or read-only disk raises faults.EnvironmentFault: one line, no half-written file.
    with StopRequest("saving the dataset first"), faults_stop([folder]):
        summary.paths = data.save_dataset(folder, name, predictors, targets, manifest)
    summary.seconds = time.perf_counter() - start
    return summary


def run_with_progress(corpus: Corpus, spec: FeatureSpec, folder: str | Path, name: str, jobs: int,
                      console) -> Summary:
    """`preprocess` with a rich progress bar, a warning line per skipped file and the summary."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    def warn(path: Path, reason: str) -> None:
        console.print(f"[yellow]warning:[/] skipped {escape(str(path))}: {escape(reason)}",
                      soft_wrap=True, highlight=False)

    columns = (TextColumn(f"{name} ({spec.features_type}, {jobs} jobs)"), BarColumn(),
               MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("files", total=len(corpus.entries))
        summary = preprocess(corpus, spec, folder, name, jobs,
                             progress=lambda n: bar.advance(task, n), warn=warn)
    for line in summary.lines():
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    return summary
