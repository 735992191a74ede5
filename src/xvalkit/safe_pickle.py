"""Reading results pickles without running code: an unpickler that admits plain data only.

A pickle names the functions that rebuild its objects, and `pickle.load` calls them: a results
folder received from someone else could run anything. xvalkit's fold and instance records hold
only dicts, lists, tuples, strings, numbers and numpy arrays, so `load` admits exactly the
globals those need (like torch.load(weights_only=True)) and refuses any other, naming it.
The files stay pickles, so the original scripts' readers (`pickle.load`) still read them.
"""

from __future__ import annotations

import pickle
from typing import IO, Any

# (module, name) a record's pickle may refer to: numpy array and scalar reconstruction (numpy 1.x
# names under numpy.core, 2.x under numpy._core) and a few builtin value types.
ALLOWED = frozenset(
    [(core, name) for core in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct", "scalar")]
    + [(core, "_frombuffer") for core in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    + [("builtins", name) for name in ("set", "frozenset", "complex", "bytearray", "slice", "range")]
    + [("collections", "OrderedDict")]
)


class ForeignObject(pickle.UnpicklingError):
    """The pickle refers to something other than plain data."""

    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.what = f"{module}.{name}"


class DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise ForeignObject(module, name)
        return super().find_class(module, name)


def load(handle: IO[bytes]) -> Any:
    """pickle.load for plain data: ForeignObject (before anything runs) for any other global."""
    return DataUnpickler(handle).load()
