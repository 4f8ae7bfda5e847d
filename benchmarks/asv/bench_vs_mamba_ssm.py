"""asv: our model against mamba-ssm's `MambaLMHeadModel` with the same weights (the vs_mamba_ssm level of
perfmamba.bench.cases), prefill and the decode step: ours / mamba-ssm's, timed interleaved in one process.
Skipped without CUDA or mamba-ssm."""

from perfmamba.bench.cases import REFERENCE_LEVEL
from perfmamba.bench.reference_model import ours_over_mamba_ssm, reference_workload, unavailable_reason

from .common import GRID, MODELS, PARAM_NAMES, configure, device, model_store, timing_case, timing_params, workload


class _VsMambaSsm:
    level, mode = REFERENCE_LEVEL, "prefill"
    param_names = PARAM_NAMES
    number = 1
    timeout = 1200

    setup_cache = staticmethod(model_store)

    def setup(self, store, preset, seqlen, batch, ratio, criterion):
        configure()
        self.case = timing_case(self.level, self.mode, preset, seqlen, batch, ratio, criterion)
        self.device = device()
        reason = unavailable_reason(self.device)
        if reason is not None:
            raise NotImplementedError(reason)
        self.ours = workload(self.case, self.device, store)
        self.theirs = reference_workload(self.case, self.device, MODELS)

    def track_ours_over_mamba_ssm(self, *params):
        from perfmamba.timing import time_interleaved

        s = time_interleaved({"ours": self.ours.fn, "mamba_ssm": self.theirs.fn}, self.device,
                             rounds=GRID.rounds, warmup=GRID.warmup)
        return ours_over_mamba_ssm(s["ours"], s["mamba_ssm"], self.case.id)

    track_ours_over_mamba_ssm.unit = "x"


class VsMambaSsmPrefill(_VsMambaSsm):
    mode = "prefill"
    params = timing_params(REFERENCE_LEVEL, mode)


class VsMambaSsmDecode(_VsMambaSsm):
    mode = "decode"
    params = timing_params(REFERENCE_LEVEL, mode)
