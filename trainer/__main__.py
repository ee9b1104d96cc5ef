"""``python -m trainer {train,eval} ...`` (see ``trainer.cli``)."""

import os
import sys

# Waiting OpenMP threads sleep instead of spinning: on a machine shared with other jobs
# spinning threads took the cores those jobs needed and training ran 11x slower
# (docs/BENCHMARKS.md, "Training on a busy machine"). libgomp reads this once, before
# torch starts its thread pool; an OMP_WAIT_POLICY already in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from reid.clihelp import require_module

require_module("torch", "python -m trainer", extra="train")

from trainer.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
