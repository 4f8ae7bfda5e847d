"""asv: our model against mamba-ssm's `MambaLMHeadModel` with the same weights (the vs_mamba_ssm level of
perfmamba.bench.cases), prefill and the decode step: ours / mamba-ssm's, timed interleaved in one process.
Skipped without CUDA or mamba-ssm."""

from perfmamba.bench.cases import REFERENCE_LEVEL
from perfmamba.bench.reference_model import ours_over_mamba_ssm, reference_workload, unavailable_reason

from .common import GRID, MODELS, _CaseBase, timing_params, workload


class _VsMambaSsm(_CaseBase):
    level = REFERENCE_LEVEL

    def setup(self, store, preset, seqlen, batch, ratio, criterion):
        super().setup(store, preset, seqlen, batch, ratio, criterion)
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
