"""xvalkit: grouped k-fold cross-validation experiments for Keras and PyTorch.

`xvalkit.load_model(path)` reloads a saved fold model (.hdf5 or .pt); see xvalkit.loading. Importing
xvalkit imports no framework: load_model is looked up on first use.
"""

__version__ = "0.1.0"
__all__ = ["load_model", "predict"]


def __getattr__(name: str):
    if name in ("load_model", "predict"):
        from . import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'xvalkit' has no attribute {name!r}")
