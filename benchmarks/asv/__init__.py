"""asv suite of perfmamba (asv.conf.json at the repository root points here).

Cases and thresholds come from `perfmamba.bench`, like the pytest-benchmark suite: the grid is $PERFMAMBA_GRID,
else "gpu" with CUDA and "quick" without. Run against the installed environment (the CUDA kernels are not
rebuilt per commit):

    asv run --python=same --set-commit-hash $(git rev-parse HEAD)      # record this commit
    asv run --python=same --quick --set-commit-hash $(git rev-parse HEAD)  # smoke run: each benchmark once
    asv publish && asv preview                                          # history pages
"""

import os

# asv forks every benchmark from a server process that has imported this suite (launch_method "forkserver", set
# in asv.conf.json), and the suite asks torch.cuda.is_available() at import time to pick its grid. With the CUDA
# runtime that check initialises the driver in the server, and CUDA cannot be used again in a forked child; the
# NVML check answers the same question without initialising CUDA.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
