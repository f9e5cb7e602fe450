"""The depth experiment as a benchmark script: ``python bench/depth.py [--quick] [--out DIR] ...``.

A thin wrapper over ``deepconvnet experiment depth`` (same options; see its --help), so the
benchmark and the command are one code path. The full default run takes about 10-20 minutes on 2
cores and writes depth_experiment.{md,json,png} into --out.
"""

from __future__ import annotations

import sys

from deepconvnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", "depth", *sys.argv[1:]]))
