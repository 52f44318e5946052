"""Ahead-of-time compile of every Triton kernel for sm_90 / sm_80 / sm_89, with no GPU (see tests/aot/).

    python tests/aot_compile.py --json OUT.json [--archs 90,80,89] [--jobs 2] [--full] [--markdown OUT.md]

Run it as a script (or from tests/test_aot_compile.py, which does so in a subprocess): the Triton
interpreter must be off when the kernel modules are imported, and this process sees to that.
"""

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from aot.run import main  # noqa: E402  (after the path set-up)

if __name__ == "__main__":
    sys.exit(main())
