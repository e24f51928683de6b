"""Ray job entry point of a parameter sweep: ``python -m serve_app.jobs.sweep --run-id ID``.

``squall sweep submit`` records the sweep and submits this with Ray's job API; the work is
:func:`serve_app.services.sweep_job.run`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from serve_app.services.sweep_job import run
from serve_app.settings import get_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", required=True, help="the sweep's registry id")
    args = parser.parse_args(argv)
    return run(args.run_id, get_settings())


if __name__ == "__main__":
    sys.exit(main())
