"""asv: the block level (see perfmamba.bench.cases), prefill and decode, dense and pruned."""

from .common import SavedModels, _SpeedupBase, _TimingBase, timing_params


class BlockPrefill(SavedModels, _TimingBase):
    level, mode = "block", "prefill"
    params = timing_params(level, mode)


class BlockDecode(SavedModels, _TimingBase):
    level, mode = "block", "decode"
    params = timing_params(level, mode)


class BlockPrefillSpeedup(SavedModels, _SpeedupBase):
    level, mode = "block", "prefill"
    params = timing_params(level, mode, pruned_only=True)


class BlockDecodeSpeedup(SavedModels, _SpeedupBase):
    level, mode = "block", "decode"
    params = timing_params(level, mode, pruned_only=True)
