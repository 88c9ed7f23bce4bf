"""Typed errors: each names the file or key that caused it, so the CLI can print one clear line."""


class TympanError(Exception):
    """Base class for every error caused by the user's input (config, data, audio)."""


class ConfigError(TympanError):
    """A config file or block is invalid: unknown key, wrong type, unknown preset."""


class DataError(TympanError):
    """A dataset, index or feature store is missing or inconsistent."""


class AudioError(DataError):
    """An audio file is empty, truncated or not audio."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class TrainingError(TympanError):
    """Training cannot go on: the loss or the weights became NaN or infinite."""


class StorageError(TympanError):
    """An output could not be written: the disk (or quota) is full."""
