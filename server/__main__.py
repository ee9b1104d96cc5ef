"""``python -m server``: see :mod:`server.cli`."""

import os
import sys

# Before numpy/faiss load. Requests run concurrently, so per-call math is small: a
# multi-threaded BLAS spinning on a 1x1280 @ 1280xN product costs ~10x the CPU of the
# product itself (measured: 28 ms vs 2 ms of CPU per search request on 2 cores).
# Idle OpenMP threads sleep instead of spinning. The environment can override both.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from server.cli import main

sys.exit(main())
