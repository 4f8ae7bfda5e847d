"""asv suite of perfmamba (asv.conf.json at the repository root points here).

Cases and thresholds come from `perfmamba.bench`, like the pytest-benchmark suite: the grid is $PERFMAMBA_GRID,
else "gpu" with CUDA and "quick" without. Run against the installed environment (the CUDA kernels are not
rebuilt per commit):

    asv run --python=same --set-commit-hash $(git rev-parse HEAD)      # record this commit
    asv run --python=same --quick --set-commit-hash $(git rev-parse HEAD)  # smoke run: each benchmark once
    asv publish && asv preview                                          # history pages
"""
