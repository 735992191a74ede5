"""xvalkit: grouped k-fold cross-validation experiments for Keras and PyTorch.

- `xvalkit.load_model(path)` reloads a saved fold model (.hdf5 or .pt); `xvalkit.predict(path, x)`
  predicts on raw features with the fold's normalisation (see xvalkit.loading).
- `xvalkit.load_results(folder)` returns an experiment's results as pandas DataFrames.

Importing xvalkit imports no framework and no pandas: these are looked up on first use.
"""

__version__ = "0.1.0"
__all__ = ["load_model", "predict", "load_results"]


def __dir__() -> list[str]:
    """The public API with the module's own names, so that tab completion and help(xvalkit) show the
    functions looked up on first use (listing them imports nothing)."""
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str):
    if name in ("load_model", "predict"):
        from . import loading

        return getattr(loading, name)
    if name == "load_results":
        from .report import load_results

        return load_results
    raise AttributeError(f"module 'xvalkit' has no attribute {name!r}")
