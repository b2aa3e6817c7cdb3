"""World configuration: a pydantic model loaded from conf/world/*.yaml.

A bad parameter fails at load time with a message that names the file and the key, e.g.
``conf/world/demo.yaml: n_users: must be >= 1 (got 0)`` (:mod:`u2qt_core.config_loader`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from u2qt_core.config_loader import load_yaml_model, validate_model
from u2qt_core.errors import ConfigError

from .vocab import SOURCES

BAD_ROW_KINDS: tuple[str, ...] = ("null_user_id", "bad_source", "empty_text", "date_mismatch")


#: A world configuration that does not validate is a :class:`ConfigError` like every other config
#: (the name is kept for callers that catch it).
WorldConfigError = ConfigError


def _check_known_sources(keys) -> None:
    """A per-source setting may only name the generator's sources."""
    unknown = sorted(set(keys) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown sources {unknown}; allowed: {list(SOURCES)}")


class VocabularyShift(BaseModel):
    """From ``from_date`` on, each event of ``sources`` speaks of a new product line with
    probability ``share`` (:mod:`pipelines.world.shift`)."""

    model_config = ConfigDict(extra="forbid")

    from_date: dt.date
    sources: list[str] = Field(min_length=1)
    share: float = Field(default=0.5, gt=0, le=1)

    @field_validator("sources")
    @classmethod
    def _sources_known(cls, v: list[str]) -> list[str]:
        _check_known_sources(v)
        return v


class WorldConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(ge=0, description="Root seed; every random draw derives from (seed, user_id, stream, day).")
    n_users: int = Field(ge=1)
    user_id_start: int = Field(default=1, ge=0, description="user_id of the first user; ids are contiguous.")
    start_date: dt.date = Field(description="First day of the token-history window (and profile as_of).")
    n_days: int = Field(ge=1, le=3660, description="Days of history written to raw_events.")
    label_window_days: int = Field(default=7, ge=1, le=366,
                                   description="Days right after the history on which labels are defined.")
    rec_train_days: int = Field(default=21, ge=1, le=366)
    rec_eval_days: int = Field(default=3, ge=1, le=366)
    rec_start_offset_days: int | None = Field(
        default=None, ge=0,
        description="Day (relative to start_date) where the recommendation log begins; default: right after history.")
    rec_impressions_per_day: float = Field(default=2.0, gt=0, le=200,
                                           description="Mean impressions per user per day in rec_impressions.")
    n_items: int = Field(default=2000, ge=20, description="Items in the recommendation catalogue.")
    mean_events_per_active_day: float = Field(default=4.0, ge=1, le=500)
    inactive_day_rate: float = Field(default=0.6, ge=0, lt=1,
                                     description="Share of (user, day) pairs with no events at all (approximate).")
    launderer_rate: float = Field(default=0.03, ge=0, le=0.2,
                                  description="Share of users with the latent laundering propensity.")
    label_behaviour_weight: float = Field(
        default=1.0, ge=0, le=10,
        description="Weight of the behaviour after the history in the takeout / purchasing_power / games "
                    "labels, relative to the latent trait (a world whose labels lean on what users do next).")
    label_noise: float = Field(default=0.5, ge=0, le=5, description="Scale of the logistic noise in those labels.")
    bad_row_rate: float = Field(default=0.0, ge=0, le=0.5,
                                description="Probability that an event also yields one malformed copy.")
    bad_row_kinds: tuple[str, ...] = Field(default=BAD_ROW_KINDS)
    source_weights: dict[str, float] = Field(
        default_factory=lambda: {"bill": 0.28, "spm": 0.30, "mini": 0.14, "app": 0.18, "search": 0.10},
        description="Base share of events per source (renormalised; traits shift it per user).")
    source_names: dict[str, str] = Field(
        default_factory=dict,
        description="Name written to raw_events.source per generated source (default: its own name), "
                    "e.g. {bill: payments}: a world for a sources config of your own.")
    repeat_document_share: float | None = Field(
        default=None, ge=0, le=0.95,
        description="Share of each day's (user, source) documents that are exact repeats of other users' "
                    "documents (for the inference dedup benchmark). None: the world as generated (the demo "
                    "world repeats ~10% by chance). A value p: with probability p a (user, day, source) gets "
                    "the events of one of repeat_document_pool shared templates of that source and day; every "
                    "other document gets a line naming its user, so nothing repeats by chance (0.0: no repeats).")
    repeat_document_pool: int = Field(
        default=8, ge=1, le=10000,
        description="Shared template documents per (source, day) that repeat_document_share draws from.")
    vocabulary_shift: VocabularyShift | None = Field(
        default=None,
        description="From a date on, a share of the chosen sources' events speak of a new product line "
                    "(pipelines/world/shift.py): the drift the nightly check must see. None: no shift.")
    num_partitions: int | None = Field(
        default=None, ge=1,
        description="Spark partitions for generation (does not change the content; None: default parallelism).")

    @field_validator("bad_row_kinds")
    @classmethod
    def _kinds_known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(v) - set(BAD_ROW_KINDS))
        if unknown:
            raise ValueError(f"unknown kinds {unknown}; allowed: {list(BAD_ROW_KINDS)}")
        if not v:
            raise ValueError("must list at least one kind")
        return tuple(v)

    @field_validator("source_weights")
    @classmethod
    def _sources_known(cls, v: dict[str, float]) -> dict[str, float]:
        _check_known_sources(v)
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        return {s: float(v.get(s, 0.0)) for s in SOURCES}

    @field_validator("source_names")
    @classmethod
    def _names_distinct(cls, v: dict[str, str]) -> dict[str, str]:
        _check_known_sources(v)
        written = [v.get(s, s) for s in SOURCES]
        if len(set(written)) != len(written) or not all(written):
            raise ValueError(f"every source needs its own non-empty name, got {dict(zip(SOURCES, written))}")
        return dict(v)

    @model_validator(mode="after")
    def _ids_fit_bigint(self) -> "WorldConfig":
        if self.user_id_start + self.n_users > 2**62:
            raise ValueError("user_id_start + n_users must stay below 2**62")
        return self

    # ---- derived calendar -------------------------------------------------------------------
    @property
    def end_date(self) -> dt.date:
        """Last day of history (inclusive)."""
        return self.start_date + dt.timedelta(days=self.n_days - 1)

    @property
    def label_window(self) -> tuple[dt.date, dt.date]:
        start = self.start_date + dt.timedelta(days=self.n_days)
        return start, start + dt.timedelta(days=self.label_window_days - 1)

    @property
    def rec_start_date(self) -> dt.date:
        off = self.n_days if self.rec_start_offset_days is None else self.rec_start_offset_days
        return self.start_date + dt.timedelta(days=off)

    @property
    def rec_days(self) -> int:
        return self.rec_train_days + self.rec_eval_days

    def history_dates(self) -> list[dt.date]:
        return [self.start_date + dt.timedelta(days=i) for i in range(self.n_days)]

    def user_ids(self) -> range:
        return range(self.user_id_start, self.user_id_start + self.n_users)


def validate_world_config(data: dict[str, Any], origin: str = "<dict>") -> WorldConfig:
    """Validate a world config mapping; errors name ``origin`` and the key."""
    return validate_model(WorldConfig, data, origin)


def load_world_config(path: str | Path, overrides: dict | None = None) -> WorldConfig:
    """Load and validate a world YAML; ``overrides`` are deep-merged over the file."""
    return load_yaml_model(WorldConfig, path, overrides)
