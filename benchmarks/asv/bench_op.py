"""asv: the op level (see perfmamba.bench.cases), prefill and decode, dense and pruned."""

from .common import _SpeedupBase, _TimingBase, timing_params


class OpPrefill(_TimingBase):
    level, mode = "op", "prefill"
    params = timing_params(level, mode)


class OpDecode(_TimingBase):
    level, mode = "op", "decode"
    params = timing_params(level, mode)


class OpPrefillSpeedup(_SpeedupBase):
    level, mode = "op", "prefill"
    params = timing_params(level, mode, pruned_only=True)


class OpDecodeSpeedup(_SpeedupBase):
    level, mode = "op", "decode"
    params = timing_params(level, mode, pruned_only=True)
