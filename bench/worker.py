"""One bench group in its own process: reads a group spec (JSON) on stdin, prints its records (JSON)."""

from __future__ import annotations

import json
import sys

from .groups import run_group

MARK = "BENCH-RECORDS "


def main() -> None:
    spec = json.loads(sys.stdin.read())
    records = run_group(spec)
    print(MARK + json.dumps(records), flush=True)


if __name__ == "__main__":
    main()
