"""Error types shown to users. Each names the thing that is wrong (file, line, field)."""


class UcdError(Exception):
    """Base class: the CLI prints these as one clear line and exits non-zero."""


class DataError(UcdError):
    """Bad or missing input data (file, column, line)."""


class ConfigError(UcdError):
    """Bad configuration value or unknown name."""
