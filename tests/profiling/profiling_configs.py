"""Tiny model configs shared by the profiler tests (smaller than the presets, so a profile takes a second)."""

from perfmamba.models import ModelConfig
from perfmamba.profiling import ProfileConfig

TINY = {
    1: ModelConfig(version=1, d_model=64, n_layer=2, vocab_size=64, d_state=8),
    2: ModelConfig(version=2, d_model=64, n_layer=2, vocab_size=64, pad_vocab_size_multiple=16, d_state=16,
                   headdim=32, chunk_size=16),
}

# Few rounds, one thread: the tests check structure and arithmetic, and time only where they must.
QUICK = ProfileConfig(seqlens=(32, 64, 128), rounds=3, warmup=1, min_time_s=0.0, cpu_threads=1, device="cpu",
                      progress=False)
