"""``python -m pipelines.world CONFIG TABLES_ROOT [--mode overwrite|append] [--set key=value ...]``:
write a synthetic world as Delta tables with the local Spark profile."""
from __future__ import annotations

import argparse
import json
import logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.world", description=__doc__)
    parser.add_argument("config", help="conf/world/<name>.yaml")
    parser.add_argument("tables_root", help="folder holding the Delta tables")
    parser.add_argument("--mode", choices=["overwrite", "append"], default="overwrite")
    parser.add_argument("--profile", default="local", help="Spark profile (conf/spark/<profile>.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (value parsed as YAML)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from pipelines.runtime.spark_session import get_spark
    from pipelines.world import load_world_config, write_world

    from u2qt_core.config_loader import parse_overrides

    config = load_world_config(args.config, parse_overrides(args.set))
    summary = write_world(get_spark(args.profile, app_name="u2qt-world"), config, args.tables_root, mode=args.mode)
    logging.getLogger("pipelines.world").info("summary %s", json.dumps(
        {"rows": summary.rows, "malformed_rows": summary.malformed_rows, "seconds": summary.seconds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
