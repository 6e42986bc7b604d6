"""One exception family for user errors; the CLI turns each into a message and exit code 2."""
from __future__ import annotations

__all__ = ["FaceVAEError", "DataError", "ConfigError", "RunError", "NonFiniteLossError"]


class FaceVAEError(Exception):
    """Base class of every error caused by user input (data, configs, run folders)."""


class DataError(FaceVAEError):
    """Invalid or unreadable data. The message names the file, the row (or file name) and the field.

    Args:
        message: what was wrong and what was expected.
        file: the file or folder the problem is in.
        row: 0-based data row (CSV header excluded) or file name inside a folder.
        field: column or attribute at fault.
    """

    def __init__(self, message: str, *, file: object = None, row: object = None, field: str | None = None):
        self.file, self.row, self.field, self.reason = file, row, field, message
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"row {row}" if isinstance(row, int) else str(row))
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


class ConfigError(FaceVAEError, ValueError):
    """A configuration value is out of range; the message names the field, allowed values and what was received."""


class RunError(FaceVAEError):
    """A run folder is missing, incomplete or of the wrong kind for the command."""


class NonFiniteLossError(FaceVAEError):
    """The training loss became NaN or infinite; the message names the global step and epoch."""
