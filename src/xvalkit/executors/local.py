"""A pool of reused worker processes, one per slot (a GPU, or a share of the CPU cores).

Each worker is a fresh interpreter (spawn) that sets CUDA_VISIBLE_DEVICES and its thread limits
before anything imports a framework, so it sees only its own GPU; it then runs job after job,
paying the TensorFlow / torch import once. A worker whose job raised is replaced (its framework
state is not trusted); a worker that dies (killed, out of memory) is replaced and its job retried
once; a worker whose memory grew by more than RECYCLE_GROWTH_MB since its first job is replaced
after its job (Keras keeps about 5 MB of each model it trained; torch workers stay flat and stay).
The parent only schedules and listens: workers write the models and fold records.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections import deque
from multiprocessing.connection import wait

from ..faults import EnvironmentFault
from ..fusion import FusedJob, to_run
from ..interrupts import StopRequest
from ..jobs import FoldJob
from . import JobError, Listener, Slot

# About 110 folds of a small Keras model (4.6 MB each, measured); a new worker costs about 5 s (its
# imports), under 3 % of them. Keras also slows as it accumulates (2-core machine, 1-epoch MLP):
# 1.37 -> 1.59 s per fold over 125 folds in one worker; 2.2 -> 3.9 s over 200 in a plain loop.
RECYCLE_GROWTH_MB = 512


def worker_main(conn, slot: Slot) -> None:
    """The worker loop: receive a job, run it, send back epochs and the result; None stops it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    from ..devices import choose_device_early
    from ..threads import use_threads

    use_threads(slot.threads or 1)
    choose_device_early(gpu=slot.gpu, cpu=slot.gpu is None, share=slot.share)
    from ..fusion import FusedJob, run_in_worker
    from ..jobs import execute
    from ..store import failure_text

    while True:
        job = conn.recv()
        if job is None:
            return
        try:
            if isinstance(job, FusedJob):  # its members are reported one by one (fusion.run_in_worker)
                run_in_worker(job, conn.send)
                conn.send(("done", None, resident_mb()))
                continue
            record = execute(job, on_epoch=lambda e, logs: conn.send(
                ("epoch", e, {k: float(v) for k, v in logs.items()})))
            conn.send(("done", record, resident_mb()))
        except EnvironmentFault as fault:  # the machine's fault, not the job's: the parent stops the run
            conn.send(("fault", str(fault)))
        except BaseException as exc:
            conn.send(("error", failure_text(exc)))


def resident_mb() -> float:
    """This process's resident memory now (Linux), else its peak (getrusage: kB, bytes on macOS)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class Worker:
    def __init__(self, slot: Slot, context):
        self.slot = slot
        self.first_mb: float | None = None  # resident memory after its first job
        self.conn, child = context.Pipe()
        self.process = context.Process(target=worker_main, args=(child, slot), daemon=True)
        self.process.start()
        child.close()
        self.job: FoldJob | FusedJob | None = None
        self.reported: set = set()  # members of its fused group already finished or failed

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.is_alive():
            try:
                self.conn.send(None)
            except (OSError, ValueError):
                pass
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class LocalPoolExecutor:
    """`keep_workers=True` keeps the workers between runs (until close()), e.g. for benchmarks;
    `recycle_mb`: the growth after which a worker is replaced (default RECYCLE_GROWTH_MB; inf: never)."""

    def __init__(self, slots: list[Slot], keep_workers: bool = False, recycle_mb: float | None = None):
        self.slots = slots
        self.recycle_mb = RECYCLE_GROWTH_MB if recycle_mb is None else recycle_mb
        self.recycled = 0  # workers replaced for their growth
        self.context = mp.get_context("spawn")
        self.keep_workers = keep_workers
        self.workers: list[Worker | None] = [None] * len(slots)

    def close(self) -> None:
        for i, worker in enumerate(self.workers):
            if worker is not None:
                worker.stop(timeout=0 if worker.job is not None else 5.0)
                self.workers[i] = None

    def run(self, jobs: list[FoldJob], listener: Listener, debug: bool) -> None:
        pending = deque(jobs)
        workers = self.workers
        retried: set[tuple[int, int]] = set()
        # Ctrl-C sets a flag, checked here at every wake-up: raised straight from the signal, the
        # KeyboardInterrupt could land in a finaliser of the many Connection objects and be lost.
        with StopRequest("stopping: the folds in training are abandoned") as stop:
            try:
                self._loop(pending, workers, retried, listener, debug, stop)
            finally:
                if not self.keep_workers or any(w is not None and w.job is not None for w in workers):
                    self.close()

    def _loop(self, pending: deque, workers: list, retried: set, listener: Listener, debug: bool,
              stop: StopRequest) -> None:
        while True:
            for i, slot in enumerate(self.slots):  # give every idle slot a job
                if workers[i] is not None and workers[i].job is not None:
                    continue
                job = None
                while pending and job is None:
                    job = to_run(pending.popleft(), listener.should_skip)
                if job is None:
                    break
                if workers[i] is None:
                    workers[i] = Worker(slot, self.context)
                workers[i].job, workers[i].reported = job, set()
                workers[i].conn.send(job)
                for member in members_of(job):
                    listener.started(member, slot.name)
            busy = [w for w in workers if w is not None and w.job is not None]
            if not busy:
                return
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=0.2)
            stop.check()
            for i, worker in enumerate(workers):
                if worker is None or worker.job is None:
                    continue
                if worker.conn in ready or worker.process.sentinel in ready:
                    workers[i] = self._handle(worker, listener, debug, pending, retried)

    def _handle(self, worker: Worker, listener: Listener, debug: bool, pending: deque,
                retried: set) -> Worker | None:
        """Read what a worker sent; returns the worker to keep, or None to replace it."""
        job = worker.job
        while worker.conn.poll():
            try:
                kind, *payload = worker.conn.recv()
            except (EOFError, OSError):
                break
            if kind == "epoch":
                listener.epoch(job, *payload)
            elif kind.startswith("member_") or kind == "note":
                self._member_news(worker, kind, payload, listener, debug)
            elif kind == "fault":
                worker.job = None
                raise EnvironmentFault(payload[0])
            elif kind == "done":
                worker.job = None
                if not isinstance(job, FusedJob):
                    listener.finished(job, payload[0])
                return worker if self._small_enough(worker, payload[1]) else None
            else:  # "error": the job raised; the worker's state is not trusted any more
                worker.job = None
                worker.stop()
                if debug:
                    raise JobError(f"{job.label} failed:\n{payload[0]}")
                for member in members_of(unreported(job, worker.reported)):
                    listener.failed(member, payload[0])
                return None
        if worker.process.is_alive():
            return worker
        # The worker died without a word (killed, out of memory): retry its job once elsewhere.
        code = worker.process.exitcode
        worker.job = None
        worker.stop()
        left = unreported(job, worker.reported)  # a fused group: only its unfinished members
        if left is None:  # it died after its group's last member was written: nothing to train again
            return None
        folds = members_of(left)
        # keyed by fold, not by job: a retried group starts with another fold when its first was written
        if not any(fold.key in retried for fold in folds):
            retried.update(fold.key for fold in folds)
            pending.appendleft(left)
        else:
            for member in folds:
                listener.failed(member, f"{death(code)}: the worker process training {job.label} died twice")
        return None

    @staticmethod
    def _member_news(worker: Worker, kind: str, payload: list, listener: Listener, debug: bool) -> None:
        """A message about one member of the worker's fused group (fusion.run_in_worker)."""
        if kind == "note":
            return listener.note(payload[0])
        member = next(m for m in worker.job.members if m.key == tuple(payload[0]))
        if kind == "member_epoch":
            listener.epoch(member, *payload[1:])
            return None
        worker.reported.add(member.key)
        if kind == "member_done":
            listener.finished(member, payload[1])
        elif debug:
            raise JobError(f"{member.label} failed:\n{payload[1]}")
        else:
            listener.failed(member, payload[1])
        return None

    def _small_enough(self, worker: Worker, resident: float) -> bool:
        """Whether `worker` may take another job; else it is stopped, and the next job starts a new one."""
        if worker.first_mb is None:
            worker.first_mb = resident
        if resident - worker.first_mb <= self.recycle_mb:
            return True
        worker.stop()
        self.recycled += 1
        return False


def members_of(job) -> list[FoldJob]:
    """A job's folds: a fused group's members, or the fold itself; none for None."""
    if job is None:
        return []
    return list(job.members) if isinstance(job, FusedJob) else [job]


def unreported(job, reported: set) -> FoldJob | FusedJob | None:
    """What of a job is not yet reported finished or failed (fusion.to_run): the job, its unreported
    members of a fused group, or None."""
    return to_run(job, lambda fold: fold.key in reported)


def death(exitcode: int | None) -> str:
    """How a worker process ended, for the failure line (a negative exit code is the signal)."""
    if exitcode is not None and exitcode < 0:
        # SIGKILL is what the kernel's out-of-memory killer sends, and what `kill -9` does
        return f"killed by signal {-exitcode} (out of memory?)"
    return f"the worker exited with code {exitcode}"
