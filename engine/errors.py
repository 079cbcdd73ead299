"""User-facing errors. Each message names the offending file, tensor or field."""


class MergescopeError(Exception):
    """Base of every error the CLI and UI report as a message rather than a traceback."""


class CheckpointError(MergescopeError):
    """A checkpoint cannot be opened or read (missing, corrupt, pickle refused...)."""


class ConfigError(MergescopeError):
    """A merge config (mergekit YAML) or sweep spec is invalid."""


class MergeError(MergescopeError):
    """A merge cannot proceed (incompatible tensors, NaN/Inf input...)."""


class BackendError(MergescopeError):
    """The serving engine failed to start, swap weights or generate."""


class StoreError(MergescopeError):
    """The results store cannot be read or written."""


class FileSystemError(MergescopeError):
    """The operating system refused a file operation (permission, read-only, no space, symlink loop...)."""


class MergescopeWarning(UserWarning):
    """Something was done differently from what the input suggests; the CLI prints it as `warning: ...`."""
