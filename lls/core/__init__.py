"""Shared basics every stage uses: errors, the cache, statistics, the pair record, target
behaviors, prompt sets and process ranks."""

from .behaviors import Behavior, animal, custom, from_name, persona, translation
from .errors import CacheError, DataError, LLSError, ModelError
from .pair import Pair

__all__ = ["Behavior", "CacheError", "DataError", "LLSError", "ModelError", "Pair", "animal",
           "custom", "from_name", "persona", "translation"]
