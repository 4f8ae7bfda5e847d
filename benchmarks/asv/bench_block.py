"""asv: the block level (see perfmamba.bench.cases), prefill and decode, dense and pruned."""

from .common import _SpeedupBase, _TimingBase, timing_params


class BlockPrefill(_TimingBase):
    level, mode = "block", "prefill"
    params = timing_params(level, mode)


class BlockDecode(_TimingBase):
    level, mode = "block", "decode"
    params = timing_params(level, mode)


class BlockPrefillSpeedup(_SpeedupBase):
    level, mode = "block", "prefill"
    params = timing_params(level, mode, pruned_only=True)


class BlockDecodeSpeedup(_SpeedupBase):
    level, mode = "block", "decode"
    params = timing_params(level, mode, pruned_only=True)
