"""Ray job entry point of a bulk feature build (:mod:`serve_app.services.feature_build`)::

ray job submit --working-dir . -- python -m serve_app.jobs.features_build --full
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from serve_app.services.feature_build import build
from serve_app.settings import get_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coin", action="append", help="repeatable; default: SQUALL_COINS")
    parser.add_argument("--interval", action="append", help="repeatable; default: all configured")
    parser.add_argument("--full", action="store_true", help="recompute everything")
    args = parser.parse_args(argv)
    summary = build(get_settings(), args.coin, args.interval, full=args.full)
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
