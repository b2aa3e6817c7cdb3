"""Synthetic multi-source world (users, behaviour events, profiles, labels, rec log) as Delta tables."""

from .config import BAD_ROW_KINDS, WorldConfig, WorldConfigError, load_world_config, validate_world_config
from .generator import TASKS, UserTraits
from .outcomes import UserWorld, assign_rec_splits, generate_user, generate_world_frames

__all__ = [
    "BAD_ROW_KINDS", "TASKS", "UserTraits", "UserWorld", "WorldConfig", "WorldConfigError",
    "assign_rec_splits", "generate_user", "generate_world_frames", "load_world_config",
    "validate_world_config", "write_world", "write_next_days", "WorldSummary",
]


def __getattr__(name):  # the Spark writer imports pyspark: load it only when asked for
    if name in ("write_world", "write_next_days", "WorldSummary"):
        from . import writer

        return getattr(writer, name)
    raise AttributeError(name)
