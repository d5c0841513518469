"""Write the README's feature table from the one definition of each feature (prep.text.features.FEATURES).

python scripts/feature_table.py          rewrite the table in README.md
python scripts/feature_table.py --check  exit 1 when README.md differs (the test suite checks it too)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from prep.text.features import FEATURES

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- feature table: scripts/feature_table.py -->", "<!-- end of feature table -->"


def table() -> str:
    rows = [f"| `{name}` | {definition} |" for name, definition in FEATURES.items()]
    return "\n".join([START, "| feature | definition |", "| --- | --- |", *rows, END])


def with_table(text: str) -> str:
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no {START!r} ... {END!r} block")
    return pattern.sub(lambda _: table(), text)


def main() -> int:
    text = README.read_text(encoding="utf-8")
    new = with_table(text)
    if "--check" in sys.argv:
        return int(new != text)
    README.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
