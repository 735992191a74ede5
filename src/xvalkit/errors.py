"""User-facing errors: one clear line, no traceback (unless in debug mode)."""


class XvalError(Exception):
    """An error the user can fix: bad experiment file, parameter, dataset, folder...

    The message is a single line that names the file, instance or parameter and says what to do.
    """


class ParameterError(XvalError):
    """A bad parameter statement or value in an experiment instance."""


class DatasetError(XvalError):
    """A missing or malformed dataset."""
