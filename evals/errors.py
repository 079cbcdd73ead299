"""The evals package's user-facing error."""

from engine.errors import MergescopeError


class SuiteError(MergescopeError):
    """An eval suite cannot be loaded or scored (missing file, bad manifest, malformed item...).

    The message names the suite file and, for items, the line number and field.
    """
