"""asv: perplexity of the trained byte-level presets, dense and pruned at every ratio x criterion of the grid.

setup_cache trains (through perfmamba.eval's cached trainer), prunes and scores every quality case once per
commit, and the track_ methods read the numbers: asv records them as a history like the timings."""

from perfmamba.bench.cases import NO_CRITERION, Case
from perfmamba.bench.quality import QualityCache

from .common import GRID, configure, device


class Perplexity:
    param_names = ["preset", "ratio", "criterion"]
    params = [list(GRID.quality_presets), list(GRID.ratios), [NO_CRITERION, *GRID.criteria]]
    timeout = 3600

    def setup_cache(self):
        configure()
        cache = QualityCache(device())
        return {case.id: cache.perplexity(case) for case in GRID.quality_cases()}

    setup_cache.timeout = 3600  # the first run trains the models

    def setup(self, scores, preset, ratio, criterion):
        configure()
        if (ratio == 0) != (criterion == NO_CRITERION):
            raise NotImplementedError("a dense model has no criterion; a pruned one needs one")
        self.case = Case(preset, "model", "prefill", GRID.quality_seqlen, 1, ratio, criterion)
        if self.case.id not in scores:
            raise NotImplementedError(f"{self.case.id} is not a quality case of grid {GRID.name!r}")

    def track_perplexity(self, scores, *params):
        return scores[self.case.id]

    track_perplexity.unit = "perplexity"

    def track_perplexity_increase(self, scores, *params):
        return scores[self.case.id] / scores[self.case.dense().id] - 1.0

    track_perplexity_increase.unit = "ratio"
