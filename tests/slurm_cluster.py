"""A real one-node Slurm cluster for the tests: munge, MariaDB, slurmdbd, slurmctld and slurmd,
all started from one temporary folder with their own ports, sockets and state, as root.

What running Slurm here takes (tried on these machines; see the README, On a Slurm cluster):
- munged runs as the munge user, with its own key and socket in the folder;
- no systemd or cgroups: proctrack/linuxproc, task/none, select/cons_tres, SlurmUser=root;
- submitit polls `sacct`, which needs the accounting daemon: slurmdbd with a real MariaDB;
- short intervals, or a requeued job waits minutes: cred_expire=10, sched_interval=2, bf_interval=2.
Every daemon runs in the foreground as a child of this process, in its own session; `stop()` first
cancels every job (slurmd leaves running jobs' processes behind) and then stops only the daemons it
started, by the pids in their pid files.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
START_TIMEOUT = 60  # seconds, on a loaded 2-core machine; every wait ends on an observed state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_programs() -> list[str]:
    needed = ("munged", "mariadbd", "mysql_install_db", "slurmdbd", "slurmctld", "slurmd", "sbatch", "sacct")
    return [name for name in needed if shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin") is None]


def poll(condition, what: str, timeout: float = START_TIMEOUT, log: Path | None = None,
         proc: subprocess.Popen | None = None):
    """Wait for `condition()`; fail with the log's tail after `timeout` or when `proc` has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.is_file() else ""
    ended = proc is not None and proc.poll() is not None
    raise RuntimeError(f"{'the daemon ended' if ended else f'timed out after {timeout} s'} waiting for {what}\n{tail}")


class SlurmCluster:
    """`with SlurmCluster(max_array_size=4) as cluster:` ... `cluster.env` for sbatch and xval."""

    def __init__(self, max_array_size: int = 1001, cpus: int = 2, partition: str = "debug"):
        # not under pytest's tmp (mode 0700): munged, as the munge user, must reach its socket folder
        self.root = Path(tempfile.mkdtemp(prefix="xval-slurm-"))
        self.root.chmod(0o755)
        self.max_array_size, self.cpus, self.partition = max_array_size, cpus, partition
        self.node = "xvalnode"
        self.conf = self.root / "etc" / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.db_socket = self.root / "db.sock"
        self.pid_files: dict[str, Path] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.env["PATH"] = self.env.get("PATH", "") + ":/usr/sbin"

    def __enter__(self) -> "SlurmCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- start ---
    def start(self) -> None:
        self._start_munge()
        self._start_mariadb()
        self._write_configs()
        self._start("slurmdbd", ["slurmdbd", "-D"], self.root / "slurmdbd.pid")
        poll(lambda: self._port_open(self.dbd_port), "slurmdbd to listen", log=self.root / "slurmdbd.log",
             proc=self.procs["slurmdbd"])
        self._start("slurmctld", ["slurmctld", "-D", "-i"], self.root / "slurmctld.pid")
        poll(lambda: self.run("scontrol", "ping", check=False).returncode == 0, "slurmctld to answer",
             log=self.root / "slurmctld.log", proc=self.procs["slurmctld"])
        self._start("slurmd", ["slurmd", "-D", "-N", self.node], self.root / "slurmd.pid")
        poll(lambda: "idle" in self.run("sinfo", "-h", "-o", "%T", check=False).stdout, "the node to be idle",
             log=self.root / "slurmd.log", proc=self.procs["slurmd"])
        # submitit's states come from sacct: it must answer from slurmdbd, with this cluster registered
        poll(lambda: self.run("sacct", "-n", "-X", check=False).returncode == 0, "sacct to answer",
             log=self.root / "slurmctld.log")

    def _start(self, name: str, argv: list[str], pid_file: Path, **kwargs) -> None:
        log = open(self.root / f"{name}.out", "wb")
        self.procs[name] = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, **kwargs)
        log.close()
        self.pid_files[name] = pid_file

    def _start_munge(self) -> None:
        folder = self.munge_socket.parent
        folder.mkdir()
        folder.chmod(0o755)  # munged wants its socket folder reachable by all
        key = folder / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        shutil.chown(folder, "munge", "munge")
        shutil.chown(key, "munge", "munge")
        pid = folder / "munged.pid"
        self._start("munged", ["munged", "-F", f"--socket={self.munge_socket}", f"--key-file={key}",
                               f"--pid-file={pid}", f"--log-file={folder / 'munged.log'}",
                               f"--seed-file={folder / 'munged.seed'}"], pid, user="munge", group="munge")
        poll(self.munge_socket.exists, "munged's socket", log=self.root / "munged.out", proc=self.procs["munged"])

    def _start_mariadb(self) -> None:
        data = self.root / "db"
        self.db_port = free_port()
        out = subprocess.run(["mysql_install_db", "--no-defaults", f"--datadir={data}", "--user=root",
                              "--auth-root-authentication-method=normal", "--skip-test-db"],
                             capture_output=True, text=True, env=self.env)
        if out.returncode != 0:
            raise RuntimeError(f"mysql_install_db failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
        pid = self.root / "mariadbd.pid"
        self._start("mariadbd", ["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={self.db_socket}",
                                 f"--port={self.db_port}", "--bind-address=127.0.0.1", "--user=root",
                                 f"--pid-file={pid}", "--skip-name-resolve", "--innodb-buffer-pool-size=32M",
                                 f"--log-error={self.root / 'mariadbd.log'}"], pid)
        poll(lambda: self._sql("SELECT 1", check=False).returncode == 0, "MariaDB to answer",
             log=self.root / "mariadbd.log", proc=self.procs["mariadbd"])
        self.db_password = secrets.token_hex(8)
        self._sql(f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{self.db_password}'; "
                  "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';")

    def _sql(self, statement: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(["mysql", "--no-defaults", f"--socket={self.db_socket}", "-uroot", "-e", statement],
                             capture_output=True, text=True, env=self.env)
        if check and out.returncode != 0:
            raise RuntimeError(f"mysql: {out.stderr}")
        return out

    def _write_configs(self) -> None:
        self.conf.parent.mkdir()
        (self.root / "spool").mkdir()
        self.dbd_port, ctld_port, slurmd_port = free_port(), free_port(), free_port()
        auth = f"AuthInfo=socket={self.munge_socket},cred_expire=10"
        dbd = self.conf.with_name("slurmdbd.conf")
        dbd.write_text("\n".join([
            "AuthType=auth/munge", auth, "DbdHost=localhost", "DbdAddr=127.0.0.1", f"DbdPort={self.dbd_port}",
            "SlurmUser=root", f"PidFile={self.root / 'slurmdbd.pid'}", f"LogFile={self.root / 'slurmdbd.log'}",
            "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1", f"StoragePort={self.db_port}",
            "StorageUser=slurm", f"StoragePass={self.db_password}", "StorageLoc=slurm_acct_db", ""]))
        dbd.chmod(0o600)
        # Two GPUs that are device files only (links to /dev/null and /dev/zero: Slurm wants character
        # devices), no hardware: Slurm hands them out and sets CUDA_VISIBLE_DEVICES as on a GPU node;
        # the frameworks then find no GPU and train on the CPU.
        devices = self.root / "dev"
        devices.mkdir()
        for index, target in enumerate(("/dev/null", "/dev/zero")):
            (devices / f"nvidia{index}").symlink_to(target)
        self.conf.with_name("gres.conf").write_text(f"Name=gpu File={devices}/nvidia[0-1]\n")
        host = socket.gethostname().split(".")[0]
        self.conf.write_text("\n".join([
            "ClusterName=xval", f"SlurmctldHost={host}(127.0.0.1)", f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge", auth,
            f"StateSaveLocation={self.root / 'state'}", f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}", f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'slurmctld.log'}", f"SlurmdLogFile={self.root / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "SchedulerParameters=sched_interval=2,bf_interval=2", "MessageTimeout=30",
            "AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=localhost",
            f"AccountingStoragePort={self.dbd_port}", f"AccountingStoragePass={self.munge_socket}",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none", f"MaxArraySize={self.max_array_size}", "ReturnToService=2",
            "MpiDefault=none", "SwitchType=switch/none", "KillWait=5", "MinJobAge=300",
            "GresTypes=gpu",
            f"NodeName={self.node} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=4000 "
            "Gres=gpu:2 State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP", ""]))

    @staticmethod
    def _port_open(port: int) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    # --- use ---
    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(list(argv), capture_output=True, text=True, env=self.env, timeout=60)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {out.stderr.strip()}")
        return out

    def jobs(self) -> list[str]:
        """Every job (array task) the controller still knows as pending or running."""
        out = self.run("squeue", "-h", "-o", "%i", check=False)
        return out.stdout.split() if out.returncode == 0 else []

    # --- stop ---
    def stop(self) -> None:
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:
                for job in self.jobs():
                    self.run("scancel", job.split("_")[0], check=False)
                poll(lambda: not self.jobs(), "the jobs to end", timeout=60)
            except (RuntimeError, subprocess.SubprocessError):
                pass  # stopping anyway: the daemons must not outlive the tests
        for name in reversed(DAEMONS):
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            pid = self._pid(name, proc)
            if proc.poll() is None:
                os.kill(pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.kill(pid, signal.SIGKILL)
                    proc.wait()
        if not os.environ.get("XVAL_KEEP_SLURM"):
            shutil.rmtree(self.root, ignore_errors=True)

    def _pid(self, name: str, proc: subprocess.Popen) -> int:
        """The daemon's pid from its pid file, when it names the process this object started."""
        try:
            pid = int(self.pid_files[name].read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return proc.pid
        return pid if pid == proc.pid else proc.pid
