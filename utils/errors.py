"""Errors that the CLI reports as one line with exit code 2 (bad input, never a bug)."""


class UserError(Exception):
    """Bad input: unknown name, density out of range, missing or corrupt files."""


class DataError(UserError):
    """A dataset file is missing, truncated or wrong, and could not be downloaded."""


class RunStoreError(UserError):
    """A stored run is missing, corrupt, tampered with, or from an incompatible format."""
