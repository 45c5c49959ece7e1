"""Write docs/schemas/<Record>.schema.json, the JSON Schema of every record one stage or command writes and
another reads (edgedistill/records.py). Each field's schema carries its `kind` (model / timing / text).

The schemas are committed (a user reads them without building the site); tests/test_records.py fails when
one is stale. Run after changing a record: `python docs/gen_schemas.py` (`--check`: exit 1 if any differs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgedistill.records import json_schemas

OUT = Path(__file__).resolve().parent / "schemas"


def rendered() -> dict[str, str]:
    return {name: json.dumps(s, indent=2) + "\n" for name, s in json_schemas().items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="exit 1 when a committed schema is stale")
    args = ap.parse_args()
    stale = []
    for name, text in rendered().items():
        path = args.out / name
        if not path.is_file() or path.read_text() != text:
            stale.append(name)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if args.check and stale:
        sys.exit(f"stale schemas under {args.out}: {stale} (run python docs/gen_schemas.py)")


if __name__ == "__main__":
    main()
