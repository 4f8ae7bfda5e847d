"""The language model: embedding -> [RMSNorm -> mixer] x n_layer -> norm_f -> tied head.

Module names follow mamba-ssm's `MambaLMHeadModel` (backbone.embedding, backbone.layers.{i}.norm/mixer,
backbone.norm_f, lm_head) so that state dicts move between the two with `load_state_dict(strict=True)`.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections import OrderedDict
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from perfmamba.checks import check_at_least, check_choice
from perfmamba.models.common import PATHS, LayerCache, MixerBase, RMSNorm
from perfmamba.models.components import span
from perfmamba.models.config import ModelConfig, get_preset
from perfmamba.models.mamba1 import Mamba1Mixer
from perfmamba.models.mamba2 import Mamba2Mixer


def build_mixer(config: ModelConfig, layer_idx: int, device=None, dtype=None) -> MixerBase:
    factory = {"layer_idx": layer_idx, "device": device, "dtype": dtype}
    d_state = config.layer_state(layer_idx)
    if config.version == 1:
        return Mamba1Mixer(config.d_model, d_state, config.d_conv, config.expand, config.dt_rank, **factory)
    return Mamba2Mixer(
        config.d_model, d_state, config.d_conv, config.expand, config.headdim, config.ngroups, config.chunk_size,
        **factory,
    )


class Block(nn.Module):
    """Pre-norm residual block. As in mamba-ssm, the residual stream is carried separately (in fp32 when
    residual_in_fp32) and added before the norm of the next block, in the norm's kernel."""

    def __init__(self, config: ModelConfig, layer_idx: int, device=None, dtype=None) -> None:
        super().__init__()
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = RMSNorm(config.d_model, eps=config.norm_epsilon, device=device, dtype=dtype)
        self.mixer = build_mixer(config, layer_idx, device, dtype)

    def _add_norm(self, hidden: Tensor, residual: Tensor | None) -> tuple[Tensor, Tensor]:
        with span("norm"):
            return self.norm.add_forward(hidden, residual, self.residual_in_fp32)

    def forward(self, hidden: Tensor, residual: Tensor | None, cache: LayerCache | None = None):
        hidden, residual = self._add_norm(hidden, residual)
        return self.mixer(hidden, cache), residual

    def step(self, hidden: Tensor, residual: Tensor | None, cache: LayerCache):
        hidden, residual = self._add_norm(hidden, residual)
        return self.mixer.step(hidden, cache), residual


class Backbone(nn.Module):
    def __init__(self, config: ModelConfig, device=None, dtype=None) -> None:
        super().__init__()
        self.residual_in_fp32 = config.residual_in_fp32
        self.embedding = nn.Embedding(config.padded_vocab_size, config.d_model, device=device, dtype=dtype)
        self.layers = nn.ModuleList(Block(config, i, device, dtype) for i in range(config.n_layer))
        self.norm_f = RMSNorm(config.d_model, eps=config.norm_epsilon, device=device, dtype=dtype)

    def _final_norm(self, hidden: Tensor, residual: Tensor | None) -> Tensor:
        with span("norm"):
            return self.norm_f.add_forward(hidden, residual, self.residual_in_fp32)[0]


class MambaLM(nn.Module):
    """A Mamba-1 or Mamba-2 language model.

    `model(input_ids)` returns logits (batch, L, padded_vocab_size). With `cache=model.allocate_cache(batch)` the
    same call is a prefill that leaves every layer's conv and SSM state in the cache; `model.step(ids, cache)`
    then decodes one token per sequence, and its logits equal the parallel forward's.
    """

    def __init__(self, config: ModelConfig, device=None, dtype=None) -> None:
        super().__init__()
        self.config = config
        self.backbone = Backbone(config, device, dtype)
        self.lm_head = nn.Linear(config.d_model, config.padded_vocab_size, bias=False, device=device, dtype=dtype)
        self.lm_head.weight = self.backbone.embedding.weight  # tied, as every published Mamba checkpoint

    @property
    def mixers(self) -> list[MixerBase]:
        return [block.mixer for block in self.backbone.layers]

    def configure(self, *, path: str | None = None, backend: str | None = None) -> MambaLM:
        """Choose the mixer path ("auto", "unfused", "fused") and the ops backend for every layer."""
        if path is not None:
            check_choice("path", path, PATHS)
        for module in self.modules():
            if path is not None and isinstance(module, MixerBase):
                module.path = path
            if backend is not None and hasattr(module, "backend"):
                module.backend = backend
        return self

    @contextlib.contextmanager
    def configured(self, *, path: str | None = None, backend: str | None = None) -> Iterator[MambaLM]:
        """`configure` for the duration of a block; every module's previous path and backend come back after it,
        also when the block raises."""
        saved = [(m, getattr(m, "path", None), getattr(m, "backend", None)) for m in self.modules()]
        self.configure(path=path, backend=backend)
        try:
            yield self
        finally:
            for module, old_path, old_backend in saved:
                if isinstance(module, MixerBase):
                    module.path = old_path
                if hasattr(module, "backend"):
                    module.backend = old_backend

    def forward(self, input_ids: Tensor, cache: list[LayerCache] | None = None, *, num_last_tokens: int = 0) -> Tensor:
        """Logits (batch, L, padded_vocab_size); of the last `num_last_tokens` positions only when > 0 (as
        mamba-ssm's `num_last_tokens`: a prompt before decoding needs the last position's logits alone)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seqlen), got shape {tuple(input_ids.shape)}")
        with span("embedding"):
            hidden = self.backbone.embedding(input_ids)
        residual = None
        for i, block in enumerate(self.backbone.layers):
            hidden, residual = block(hidden, residual, None if cache is None else cache[i])
        if num_last_tokens > 0:
            hidden, residual = hidden[:, -num_last_tokens:], residual[:, -num_last_tokens:]
        hidden = self.backbone._final_norm(hidden, residual)
        with span("lm_head"):
            return self.lm_head(hidden)

    def step(self, input_ids: Tensor, cache: list[LayerCache]) -> Tensor:
        """Decode one token per sequence: input_ids (batch,) -> logits (batch, padded_vocab_size)."""
        with span("embedding"):
            hidden = self.backbone.embedding(input_ids)
        residual = None
        for block, layer_cache in zip(self.backbone.layers, cache, strict=True):
            hidden, residual = block.step(hidden, residual, layer_cache)
        hidden = self.backbone._final_norm(hidden, residual)
        with span("lm_head"):
            return self.lm_head(hidden)

    def allocate_cache(self, batch: int, dtype: torch.dtype | None = None) -> list[LayerCache]:
        return [mixer.allocate_cache(batch, dtype) for mixer in self.mixers]

    @torch.inference_mode()
    def generate(
        self, input_ids: Tensor, max_new_tokens: int, *, cg: bool = False, top_k: int = 1, temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Prefill the prompt `input_ids` (batch, L), then decode `max_new_tokens` tokens one recurrent step at a
        time; returns the new token ids (batch, max_new_tokens).

        `top_k=1` is greedy; otherwise a token is drawn (with `generator`) from the `top_k` most likely ones (0:
        the whole vocabulary) after dividing the logits by `temperature`. Padding rows of the vocabulary are never
        chosen. `cg=True` (CUDA only) runs the decode step as a CUDA graph, as mamba-ssm's `generate(..., cg=True)`
        does: captured on the first call for a batch size (the model keeps a few, dropped when its weights, path
        or backend change) and replayed per token, so the host's launch path leaves the loop."""
        if input_ids.dim() != 2 or input_ids.shape[1] < 1:
            raise ValueError(f"input_ids must be (batch, seqlen) with seqlen >= 1, got shape {tuple(input_ids.shape)}")
        check_at_least("max_new_tokens", max_new_tokens)
        check_at_least("top_k", top_k, 0)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
        weight = self.lm_head.weight
        if cg and weight.device.type != "cuda":
            raise ValueError(f"cg=True needs the model on a CUDA device; it is on {weight.device} (use cg=False)")
        vocab = self.config.vocab_size

        def sample(logits: Tensor) -> Tensor:
            return sample_tokens(logits[:, :vocab], top_k, temperature, generator)

        graph = _decode_graph(self, input_ids.shape[0]) if cg else None
        cache = graph.cache if graph is not None else self.allocate_cache(input_ids.shape[0])
        tokens = [sample(self(input_ids, cache=cache, num_last_tokens=1)[:, -1])]
        for _ in range(max_new_tokens - 1):
            logits = graph.step(tokens[-1]) if graph is not None else self.step(tokens[-1], cache)
            tokens.append(sample(logits))
        return torch.stack(tokens, dim=1)


def sample_tokens(logits: Tensor, top_k: int = 1, temperature: float = 1.0,
                  generator: torch.Generator | None = None) -> Tensor:
    """Next tokens (batch,) from logits (batch, vocab): the argmax when `top_k == 1`, else a draw from the
    softmax of logits / temperature over the `top_k` largest (0: all)."""
    if top_k == 1:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        values, indices = logits.topk(top_k, dim=-1)
        choice = torch.multinomial(values.softmax(-1), 1, generator=generator)
        return indices.gather(-1, choice).squeeze(-1)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


class DecodeGraph:
    """`model.step` for `batch` sequences captured in a CUDA graph, over a cache and a token buffer of its own:
    `step(tokens)` copies the tokens in, replays, and returns the logits buffer (overwritten by the next step).
    A prefill into `cache` (which writes its states in place) starts a new generation."""

    def __init__(self, model: MambaLM, batch: int, warmups: int = 2) -> None:
        device = model.lm_head.weight.device
        self.cache = model.allocate_cache(batch)
        self.tokens = torch.zeros(batch, dtype=torch.long, device=device)
        # Warm-up on a side stream first: Triton kernels compile and autotune there, never inside a capture.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmups):
                model.step(self.tokens, self.cache)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = model.step(self.tokens, self.cache)

    def step(self, tokens: Tensor) -> Tensor:
        self.tokens.copy_(tokens)
        self.graph.replay()
        return self.logits


# Captured decode graphs per model, outside the module so that copy.deepcopy (pruning's copies) and pickling never
# meet a CUDA graph; weak keys: a model's graphs go with it.
_DECODE_GRAPHS: weakref.WeakKeyDictionary[MambaLM, OrderedDict[tuple, DecodeGraph]] = weakref.WeakKeyDictionary()
MAX_DECODE_GRAPHS = 4  # batch sizes kept per model


def _decode_graph(model: MambaLM, batch: int) -> DecodeGraph:
    """The model's captured decode step for `batch`, captured now if the model has none for what it is now (its
    parameters' storage, paths and backends: a graph replays the kernels and addresses it captured)."""
    setup = tuple((getattr(m, "path", None), getattr(m, "backend", None)) for m in model.modules())
    key = (batch, tuple(p.data_ptr() for p in model.parameters()), setup)
    graphs = _DECODE_GRAPHS.setdefault(model, OrderedDict())
    if key not in graphs:
        graphs[key] = DecodeGraph(model, batch)
        while len(graphs) > MAX_DECODE_GRAPHS:
            graphs.popitem(last=False)
    graphs.move_to_end(key)
    return graphs[key]


def _init_weights(model: MambaLM) -> None:
    """mamba-ssm's initialisation (models/mixer_seq_simple.py::_init_weights), which training relies on."""
    n_layer = model.config.n_layer
    with torch.no_grad():
        nn.init.normal_(model.backbone.embedding.weight, std=0.02)
        for mixer in model.mixers:
            # Residual-branch output projections are scaled by 1/sqrt(n_layer) (GPT-2's prenorm rescale).
            nn.init.kaiming_uniform_(mixer.out_proj.weight, a=math.sqrt(5))
            mixer.out_proj.weight /= math.sqrt(n_layer)


def build_model(
    preset_or_config: str | ModelConfig,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int = 0,
) -> MambaLM:
    """A freshly initialised model from a preset name (see `PRESETS`) or a `ModelConfig`; seeded.

    The weights are drawn on `device`, by its own generator: the same seed gives the same weights on the same
    kind of device, not on a CPU and a GPU (build on the CPU and `.to("cuda")` for that)."""
    config = get_preset(preset_or_config) if isinstance(preset_or_config, str) else preset_or_config
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} requested but torch sees no CUDA device")
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = MambaLM(config, device=device, dtype=dtype)
        _init_weights(model)
    return model
