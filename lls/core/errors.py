"""Errors raised by `lls`. Each message says what was wrong, where, and what to do."""


class LLSError(Exception):
    """Base class for every error `lls` raises on purpose (bad input, missing resources)."""


class DataError(LLSError):
    """A preference dataset could not be read or is unusable."""


class ModelError(LLSError):
    """A model or tokenizer could not be located or loaded."""


class CacheError(LLSError):
    """A cache entry is missing, corrupt or inconsistent."""
