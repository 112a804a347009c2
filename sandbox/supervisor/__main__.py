"""``python -m sandbox.supervisor [PATH]``: build the supervisor (for images and CI)."""

from __future__ import annotations

import sys
from pathlib import Path

from sandbox.supervisor import BUILT, build

target = Path(sys.argv[1]) if len(sys.argv) > 1 else BUILT
build(target)
print(target)
