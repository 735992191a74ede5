"""What deterministic training costs: epochs per second of EXAMPLE_model with xvalkit's determinism
settings (xvalkit/determinism.py: TensorFlow op determinism on the CPU; torch deterministic
algorithms and cuDNN) against the frameworks' defaults, side by side, in one run.

Each side is benchmarks/frameworks.py in a fresh process (TensorFlow's op determinism cannot be
turned off in a process once on); the defaults' side replaces xvalkit's settings by no-ops.

    python benchmarks/determinism.py [--epochs 6] [--repeats 3] [--frameworks keras,torch] [--gpu 0]
    python benchmarks/determinism.py --quick      # 2 epochs, 1 repeat: checks that it runs
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run frameworks.py with xvalkit's determinism settings replaced by no-ops (before the trainers import them).
DEFAULTS = ("import runpy, sys; import xvalkit.determinism as d; "
            "d.torch_deterministic = lambda device: {}; d.keras_deterministic = lambda on_gpu: {}; "
            "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def rates(extra: list[str], defaults: bool) -> dict[str, tuple[float, str]]:
    """{framework: (epochs/s, device)} from one run of frameworks.py."""
    command = [sys.executable, "-c", DEFAULTS, str(HERE / "frameworks.py")] if defaults else \
        [sys.executable, str(HERE / "frameworks.py")]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
    out = subprocess.run(command + extra, capture_output=True, text=True, env=env, check=True).stdout
    return {m[1]: (float(m[2]), m[3]) for m in re.finditer(r"^  (\w+) +([\d.]+) epochs/s  on (.*)$", out, re.M)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frameworks", default="keras,torch")
    parser.add_argument("--gpu", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="2 epochs, 1 repeat: check that it runs")
    args = parser.parse_args()
    extra = ["--quick"] if args.quick else ["--epochs", str(args.epochs), "--repeats", str(args.repeats)]
    extra += ["--frameworks", args.frameworks] + (["--gpu", str(args.gpu)] if args.gpu is not None else [])
    deterministic, defaults = rates(extra, defaults=False), rates(extra, defaults=True)
    print(f"EXAMPLE_model on the demo fold, epochs/s (benchmarks/frameworks.py {' '.join(extra)})")
    for framework, (rate, device) in deterministic.items():
        other = defaults[framework][0]
        print(f"  {framework:6s} deterministic {rate:7.2f}  framework defaults {other:7.2f}  "
              f"ratio {rate / other:.2f}x  on {device}")


if __name__ == "__main__":
    main()
