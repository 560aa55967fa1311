"""The recorded fuzz run of the readers (issue 27): ``tests/test_fuzz_readers.py`` with
many more examples per reader than CI runs, and hypothesis' statistics.

    OMP_NUM_THREADS=1 python benchmarks/fuzz_readers.py 2000

Every reader, given that many mutated (or random) files, must read them or raise
``InputError``; the exit status is pytest's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    examples = argv[0] if argv else "2000"
    env = {**os.environ, "POSEFIX_FUZZ_EXAMPLES": examples,
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "--hypothesis-show-statistics", "--hypothesis-seed=27",
                            str(ROOT / "tests" / "test_fuzz_readers.py"), *argv[1:]],
                           env=env, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
