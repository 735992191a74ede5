# A stand-in for the original scripts' machinery. xvalkit must never import it: importing it leaves
# a file behind, which tests/test_port.py looks for.
import os

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "XVAL_INSTANCE_WAS_IMPORTED"), "w") as f:
    f.write("imported")


def run_experiment(*args, **kwargs):
    raise RuntimeError("the old machinery ran")
