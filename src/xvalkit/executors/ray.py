"""The same jobs as Ray tasks, on this machine or a Ray cluster (`--backend ray --address ADDR`).

Every node must see the experiment folder and the data folder at the same paths (a shared
filesystem): tasks write models and fold records there, exactly as local workers do. A task whose
node or worker process is lost is retried (max_retries); a Python error in a job is not retried
but recorded, like any failed fold; an environment fault (a full disk: faults.py) stops the run.
Ray reuses its worker processes for CPU tasks, so the framework import is paid once per worker, not
per fold; like the local pool, a worker is replaced after MAX_CALLS folds (Ray's `max_calls`), so
that Keras' memory kept per model does not grow it without bound. GPU tasks keep Ray's default of a
fresh worker per task (a reused one could not follow the GPU Ray assigns to the next task).

Which cluster: --address, else RAY_ADDRESS, else a new local Ray; `auto` is the cluster started
with `ray start` on this machine. A cluster that requires a token gets it as Ray documents
(ray_address.py), and a missing one is one clear line.
"""

from __future__ import annotations

import traceback

from ..errors import XvalError
from ..faults import EnvironmentFault
from ..jobs import FoldJob
from . import JobError, Listener
from .local import RECYCLE_GROWTH_MB
from .ray_address import cluster_address, prepare_authentication

MAX_RETRIES = 3
# Folds per Ray worker process: the local pool's period, which replaces a worker once it has grown
# by RECYCLE_GROWTH_MB, at the 4.6 MB Keras keeps per model (about 110 folds). Ray cannot read a
# worker's growth, only count its tasks.
KERAS_MB_PER_MODEL = 4.6
MAX_CALLS = int(RECYCLE_GROWTH_MB / KERAS_MB_PER_MODEL)


class FoldFailed(Exception):
    """A job's Python error as failure_text wrote it in the task: Ray pickles the exception, and a
    pickled exception loses its chain (__cause__, __context__), where the user's message may be."""


def _execute(job: FoldJob, gpu_share: float = 0.0, threads: int = 1) -> dict:
    from ..devices import prepare_gpu_sharing
    from ..jobs import execute
    from ..store import failure_text
    from ..threads import use_threads

    use_threads(threads)  # the task's CPUs; a reused worker may have run a task of another size
    prepare_gpu_sharing(gpu_share)  # Ray set CUDA_VISIBLE_DEVICES; memory growth and torch's cap are ours
    try:
        return execute(job)
    except EnvironmentFault:
        raise
    except Exception as exc:
        raise FoldFailed(failure_text(exc)) from None


class RayExecutor:
    def __init__(self, address: str | None, gpus_per_job: float, num_cpus: int | None = None, threads: int = 1):
        try:
            import ray
        except ImportError:
            raise XvalError('--backend ray needs Ray: pip install -e ".[ray]"') from None
        self.ray = ray
        self.address = cluster_address(address)
        self.gpus_per_job = gpus_per_job
        self.num_cpus = num_cpus
        self.threads = threads  # the CPUs each task asks Ray for, and trains with

    def where(self) -> str:
        return f"Ray ({self.address or 'local'}), {self.gpus_per_job:g} GPU per job"

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        if self.address:
            prepare_authentication(self.address)
        try:
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False)
        except Exception as exc:  # ConnectionError and Ray's own start-up errors
            raise XvalError(f"--backend ray: cannot connect to Ray at {self.address or 'a new local cluster'}: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None

    def run(self, jobs: list[FoldJob], listener: Listener, debug: bool) -> None:
        ray = self._connect() or self.ray
        # max_calls is set by ray.remote only (options() refuses it); GPU tasks keep Ray's default of 1
        recycle = {} if self.gpus_per_job else {"max_calls": MAX_CALLS}
        task = ray.remote(num_cpus=self.threads, num_gpus=self.gpus_per_job, max_retries=MAX_RETRIES,
                          retry_exceptions=False, **recycle)(_execute)
        refs = {}
        for job in jobs:
            if not listener.should_skip(job):
                refs[task.remote(job, self.gpus_per_job, self.threads)] = job
                listener.started(job, "Ray")
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    job = refs.pop(ref)
                    try:
                        record = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        if isinstance(exc.cause, EnvironmentFault):  # a full disk: stop, not a failed fold
                            raise EnvironmentFault(str(exc.cause)) from None
                        text = str(exc.cause) if isinstance(exc.cause, FoldFailed) else str(exc)
                        if debug:
                            raise JobError(f"{job.label} failed:\n{text}") from None
                        listener.failed(job, text)
                    except ray.exceptions.RayError as exc:  # lost after all retries
                        listener.failed(job, f"Ray lost {job.label} after {MAX_RETRIES} retries: {exc}")
                    else:
                        listener.finished(job, record)
        except (KeyboardInterrupt, EnvironmentFault):
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
        except JobError:
            raise
        except Exception:
            raise XvalError(f"Ray backend failed: {traceback.format_exc().splitlines()[-1]}") from None
