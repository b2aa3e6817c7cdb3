"""On-disk size of a table folder (FOUNDv2 section 5.4.1, table 6).

The tables themselves are written by the pipeline with Spark/Delta
(:func:`pipelines.evaluation.eval_job.measure_storage`); this module only measures folders and divides.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["TableSize", "table_size", "storage_comparison"]


@dataclass(frozen=True)
class TableSize:
    data_bytes: int      # Parquet data files (what a reader scans)
    log_bytes: int       # Delta transaction log (_delta_log) and other metadata files
    files: int           # Parquet data files
    user_days: int       # distinct (user_id, event_date) the table covers
    rows: int

    @property
    def total_bytes(self) -> int:
        return self.data_bytes + self.log_bytes

    @property
    def data_bytes_per_user_day(self) -> float:
        return self.data_bytes / self.user_days if self.user_days else float("nan")

    @property
    def total_bytes_per_user_day(self) -> float:
        return self.total_bytes / self.user_days if self.user_days else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "total_bytes": self.total_bytes,
                "data_bytes_per_user_day": self.data_bytes_per_user_day,
                "total_bytes_per_user_day": self.total_bytes_per_user_day}


def table_size(path: str | Path, *, user_days: int, rows: int) -> TableSize:
    """Sizes of the files under ``path``: ``*.parquet`` files count as data (``.crc`` checksum
    files of local Hadoop writes are ignored), everything else as log/metadata."""
    data = log = files = 0
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            if name.endswith(".crc"):
                continue
            size = os.path.getsize(os.path.join(dirpath, name))
            if name.endswith(".parquet") and "_delta_log" not in dirpath:
                data += size
                files += 1
            else:
                log += size
    return TableSize(data_bytes=data, log_bytes=log, files=files, user_days=user_days, rows=rows)


def storage_comparison(tokens: TableSize, embeddings: TableSize) -> dict:
    """Bytes per user per day of both tables and the compression ratio (embeddings / tokens)."""
    return {
        "tokens": tokens.as_dict(),
        "embeddings": embeddings.as_dict(),
        "ratio_data": embeddings.data_bytes / tokens.data_bytes if tokens.data_bytes else float("nan"),
        "ratio_total": embeddings.total_bytes / tokens.total_bytes if tokens.total_bytes else float("nan"),
    }
