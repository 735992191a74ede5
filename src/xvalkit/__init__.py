__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: `import xvalkit` stays light (no pandas) until load_results is used.
    if name == "load_results":
        from .report import load_results

        return load_results
    raise AttributeError(f"module 'xvalkit' has no attribute {name!r}")
