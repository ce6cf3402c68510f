"""Errors that the CLI reports as one line with exit code 2 (bad input, never a bug)."""


class UserError(Exception):
    """Bad input: unknown name, density out of range, missing or corrupt files."""


class DataError(UserError):
    """A dataset file is missing, truncated or wrong, and could not be downloaded."""


class RunStoreError(UserError):
    """A stored run is missing, corrupt, tampered with, or from an incompatible format."""


def check_density(density: float) -> float:
    """Validate a density fraction in (0, 1] (every API takes fractions; percent only in the CLI)."""
    if not (isinstance(density, (int, float)) and 0 < density <= 1):
        raise UserError(f"density must be in (0, 1] as a fraction (the CLI takes percent in (0, 100]), got {density}")
    return float(density)
