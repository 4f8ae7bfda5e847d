"""asv: the model level (see perfmamba.bench.cases), prefill and decode, dense and pruned."""

from perfmamba.bench.workloads import peak_memory_bytes

from .common import (
    PARAM_NAMES,
    _SpeedupBase,
    _TimingBase,
    device,
    model_store,
    timing_case,
    timing_params,
    workload,
)


class ModelPrefill(_TimingBase):
    level, mode = "model", "prefill"
    params = timing_params(level, mode)


class ModelDecode(_TimingBase):
    level, mode = "model", "decode"
    params = timing_params(level, mode)


class ModelPrefillSpeedup(_SpeedupBase):
    level, mode = "model", "prefill"
    params = timing_params(level, mode, pruned_only=True)


class ModelDecodeSpeedup(_SpeedupBase):
    level, mode = "model", "decode"
    params = timing_params(level, mode, pruned_only=True)


class ModelPeakMemory:
    """Peak GPU memory of one prefill call (torch.cuda.max_memory_allocated): asv's peakmem_ reads host RSS,
    which does not see GPU memory. Skipped without CUDA."""

    param_names = PARAM_NAMES
    params = timing_params("model", "prefill")
    timeout = 1200
    setup_cache = staticmethod(model_store)

    def setup(self, store, *params):
        self.case = timing_case("model", "prefill", *params)
        self.device = device()
        if self.device.type != "cuda":
            raise NotImplementedError("peak GPU memory needs a CUDA device")
        self.workload = workload(self.case, self.device, store)

    def track_peak_gpu_memory(self, *params):
        return peak_memory_bytes(self.workload)

    track_peak_gpu_memory.unit = "bytes"


class ModelDecodeCache:
    """Bytes of the decode cache (conv + SSM states of every layer): what pruning saves per sequence served."""

    param_names = PARAM_NAMES
    params = timing_params("model", "decode")
    setup_cache = staticmethod(model_store)

    def setup(self, store, *params):
        self.case = timing_case("model", "decode", *params)
        self.workload = workload(self.case, device(), store)

    def track_cache_bytes(self, *params):
        return self.workload.info["cache_bytes"]

    track_cache_bytes.unit = "bytes"
