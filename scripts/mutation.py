"""Mutation testing of the modules whose bugs give wrong numbers or lost files (not part of CI).

    pip install -e ".[dev,mutation]"
    python scripts/mutation.py                 # every module below, one after another
    python scripts/mutation.py folds atomic    # some of them

For each module, mutmut (https://github.com/boxed/mutmut) plants small bugs one at a time (a `<`
for a `<=`, a constant changed, a call's argument dropped...) in a copy of the working tree and runs
the module's own test files against each; a mutant is killed when a test fails. The table gives,
per module, the mutants, how many the tests killed, how many survived, how many no test reached,
and the score: killed / (killed + survived + timed out), the mutants its tests reach. The survivors'
diffs go to mutation-report/<module>.txt: each is a bug the tests let through, or an equivalent
change (the same behaviour) to be listed as such.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# module -> (source file, its own test files): the tests that should catch a bug planted there
MODULES = {
    "folds": ("src/xvalkit/folds.py", ["tests/test_folds.py"]),
    "metrics": ("src/xvalkit/metrics.py", ["tests/test_metrics.py"]),
    # The known answers of test_compare.py and test_report.py, without the tests that train real models
    # in this process: 30 s per mutant, and a child forked after torch started its threads hangs
    # (mutmut forks one per mutant).
    "significance": ("src/xvalkit/reporting/significance.py",
                     ["tests/test_compare.py",
                      "--deselect", "tests/test_compare.py::test_sweep_run_then_a_value_appended_keeps_the_old_combinations",
                      "--deselect", "tests/test_compare.py::test_repeated_run_records_the_repeat_and_tests_over_all_folds",
                      "tests/test_report.py::test_corrected_t_test_known_answers",
                      "tests/test_report.py::test_corrected_t_test_edge_cases",
                      "tests/test_report.py::test_marks_use_common_folds_with_the_same_test_items"]),
    # test_tables.py: the tables as rows, in seconds. test_report.py writes workbooks, draws plots and
    # trains real models in this process (minutes per mutant; a forked mutant hangs after torch started).
    "tables": ("src/xvalkit/reporting/tables.py", ["tests/test_tables.py"]),
    # its own fast tests, and those of tests/test_mmap.py that train nothing (the others train for minutes)
    "fold_data": ("src/xvalkit/fold_data.py", ["tests/test_fold_data.py", *(f"tests/test_mmap.py::{name}" for name in (
        "test_a_job_cannot_modify_a_mapped_dataset", "test_streamed_statistics_and_batches",
        "test_the_next_instance_of_a_fold_gets_a_copy_of_what_was_prepared_for_it",
        "test_recently_prepared_keeps_no_more_than_its_limit"))]),
    "atomic": ("src/xvalkit/atomic.py", ["tests/test_atomic.py"]),
}
# mutmut's exit codes of a mutant's test run (mutmut/stats.py), by what they mean here
KILLED, SURVIVED, UNREACHED, TIMEOUT = {1, 3, 37}, {0}, {5, 33}, {24, -24, 36, 152, 255}


def copy_tree(target: Path) -> None:
    """The working tree as it is (tracked and new files that git does not ignore), not the index."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def configure(tree: Path, source: str, tests: list[str]) -> None:
    config = (f'\n[tool.mutmut]\nsource_paths = ["src/"]\nonly_mutate = ["{source}"]\n'
              # in this process, serially: mutmut forks a child per mutant and records which tests reach what
              'pytest_add_cli_args = ["-n", "0", "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestUnraisableExceptionWarning"]\n'
              f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n")
    with open(tree / "pyproject.toml", "a") as handle:
        handle.write(config)


def score(tree: Path, source: str) -> tuple[Counter, list[str], list[str]]:
    """(counts by kind, surviving mutants, mutants no test reached)."""
    meta = json.loads((tree / "mutants" / f"{source}.meta").read_text())
    counts, names = Counter(), {"survived": [], "unreached": []}
    for name, code in meta["exit_code_by_key"].items():
        kind = ("killed" if code in KILLED else "survived" if code in SURVIVED else "unreached" if code in UNREACHED
                else "timeout" if code in TIMEOUT else "other")
        counts[kind] += 1
        names.get(kind, []).append(name)
    return counts, sorted(names["survived"]), sorted(names["unreached"])


def run_module(name: str, jobs: int, report_dir: Path) -> dict:
    source, tests = MODULES[name]
    with tempfile.TemporaryDirectory(prefix=f"mutation-{name}-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        configure(tree, source, tests)
        env = {**os.environ, "PYTHONPATH": "", "CI": ""}  # the copy's sources; skips are not failures here
        start = time.monotonic()
        log = report_dir / f"{name}.log"
        with open(log, "w") as handle:
            done = subprocess.run(["mutmut", "run", "--max-children", str(jobs)], cwd=tree, env=env,
                                  stdout=handle, stderr=subprocess.STDOUT)
        if done.returncode or not (tree / "mutants" / f"{source}.meta").is_file():
            raise SystemExit(f"mutation: mutmut failed on {source} (exit {done.returncode}); its output is in {log}")
        counts, survivors, unreached = score(tree, source)
        with open(report_dir / f"{name}.txt", "w") as handle:
            handle.write(f"# {source}: {len(survivors)} surviving mutant(s), tests {' '.join(tests)}\n\n")
            if unreached:  # the functions these tests never call
                handle.write(f"unreached by the tests: {' '.join(unreached)}\n\n")
            for mutant in survivors:
                shown = subprocess.run(["mutmut", "show", mutant], cwd=tree, env=env, capture_output=True, text=True)
                handle.write(f"## {mutant}\n{shown.stdout}\n")
    reached = counts["killed"] + counts["survived"] + counts["timeout"]
    return {"module": source, "mutants": sum(counts.values()),
            **{kind: counts[kind] for kind in ("killed", "survived", "unreached", "timeout", "other")},
            "score": counts["killed"] / reached if reached else float("nan"), "minutes": (time.monotonic() - start) / 60}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"any of {', '.join(MODULES)} (default: all)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants tested at once")
    parser.add_argument("--report", type=Path, default=ROOT / "mutation-report", help="where survivors are listed")
    args = parser.parse_args(argv)
    unknown = [name for name in args.modules if name not in MODULES]
    if unknown:
        parser.error(f"no module {', '.join(unknown)}: choose among {', '.join(MODULES)}")
    if shutil.which("mutmut") is None:
        print('mutation: mutmut is not installed; pip install -e ".[dev,mutation]"', file=sys.stderr)
        return 2
    args.report.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.modules or list(MODULES):
        rows.append(run_module(name, args.jobs, args.report))
        row = rows[-1]
        print(f"{row['module']:40} {row['mutants']:5} mutants  killed {row['killed']:4}  survived {row['survived']:4}  "
              f"unreached {row['unreached']:4}  timeout {row['timeout']:3}  score {row['score']:6.1%}  "
              f"({row['minutes']:.1f} min)", flush=True)
    (args.report / "scores.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
