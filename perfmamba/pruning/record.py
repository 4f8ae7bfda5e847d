"""The record of a pruning run: what was kept and what it saved, as a result file and a heatmap."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from perfmamba.pruning.calibration import mixers_of
from perfmamba.results import read_json, write_json

REPORT_KIND = "prune_report"
REPORT_FILE = "prune_report.json"
HEATMAP_FILE = "prune_scores.png"


@dataclass
class LayerReport:
    """One layer: its d_state before and after, the kept state indices and every state's score, per group."""

    layer: int
    d_state_before: int
    d_state_after: int
    kept: list[list[int]]
    scores: list[list[float]]


@dataclass
class PruneReport:
    """What `prune_states` did. Sizes are of the returned model: a `mask`ed model keeps its shapes, so its
    parameter and cache sizes do not change (states_after says what a `remove` would leave)."""

    version: int
    criterion: str
    allocation: str
    mode: str
    ratio: float
    multiple: int | str
    min_states: int
    seed: int
    layers: list[LayerReport]
    params_before: int
    params_after: int
    cache_bytes_before: int  # decode cache (conv + SSM state) of one sequence, all layers
    cache_bytes_after: int
    # batches, tokens, seconds, seq_len (the longest row calibrated on), seq_len_requested, batch_size
    calibration: dict[str, Any] = field(default_factory=dict)
    config_before: dict[str, Any] = field(default_factory=dict)
    config_after: dict[str, Any] = field(default_factory=dict)

    @property
    def d_state_before(self) -> list[int]:
        return [layer.d_state_before for layer in self.layers]

    @property
    def d_state_after(self) -> list[int]:
        return [layer.d_state_after for layer in self.layers]

    @property
    def states_before(self) -> int:
        return sum(layer.d_state_before * len(layer.kept) for layer in self.layers)

    @property
    def states_after(self) -> int:
        return sum(sum(len(k) for k in layer.kept) for layer in self.layers)

    @property
    def achieved_ratio(self) -> float:
        """The fraction of all states removed (differs from `ratio` by the rounding to `multiple`)."""
        return 1.0 - self.states_after / self.states_before

    @property
    def param_saving(self) -> float:
        return 1.0 - self.params_after / self.params_before

    @property
    def cache_saving(self) -> float:
        return 1.0 - self.cache_bytes_after / self.cache_bytes_before

    def to_dict(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["summary"] = {
            "d_state_before": self.d_state_before, "d_state_after": self.d_state_after,
            "states_before": self.states_before, "states_after": self.states_after,
            "achieved_ratio": self.achieved_ratio, "param_saving": self.param_saving,
            "cache_saving": self.cache_saving,
        }
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> PruneReport:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in doc.items() if k in names}
        kwargs["layers"] = [LayerReport(**layer) for layer in doc["layers"]]
        return cls(**kwargs)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the report as a `prune_report` result file (schema version, environment, atomic)."""
        return write_json(path, self.to_dict(), kind=REPORT_KIND)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PruneReport:
        from perfmamba.results import ResultsFileError

        doc = read_json(path, kind=REPORT_KIND)
        try:
            return cls.from_dict(doc)
        except (KeyError, TypeError) as e:
            raise ResultsFileError(f"{path}: not a complete prune report ({e!r})") from e

    def summary(self) -> str:
        """A few lines for a terminal."""
        def states(d: list[int]) -> str:
            return f"{d[0]} in every layer" if len(set(d)) == 1 else f"{min(d)} to {max(d)} by layer {list(d)}"

        per_layer = f"{states(self.d_state_before)} -> {states(self.d_state_after)}"
        return "\n".join([
            f"pruned Mamba-{self.version}: criterion={self.criterion} allocation={self.allocation} "
            f"mode={self.mode} ratio={self.ratio:g} (achieved {self.achieved_ratio:.3f})",
            f"d_state: {per_layer}",
            f"parameters: {self.params_before:,} -> {self.params_after:,} ({100 * self.param_saving:.2f}% saved)",
            f"decode cache per sequence: {self.cache_bytes_before:,} -> {self.cache_bytes_after:,} bytes "
            f"({100 * self.cache_saving:.2f}% saved)",
            *([f"calibration: {self.calibration['tokens']:,} tokens in rows of {self.calibration['seq_len']:,}"]
              if self.calibration.get("tokens") and self.calibration.get("seq_len") else []),
            *([f"warning: {self.calibration['warning']}"] if self.calibration.get("warning") else []),
        ])

    def plot_heatmap(self, path: str | os.PathLike) -> Path:
        """Save a heatmap of scores (layers x states; each layer scaled to its best state, log scale), beside
        the kept states (matplotlib, a dependency of perfmamba)."""
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
            import numpy as np
        except ImportError as e:
            raise ImportError(f"plot_heatmap needs matplotlib: pip install matplotlib ({e})") from e
        n_max = max(self.d_state_before)
        scores = np.full((len(self.layers), n_max), np.nan)
        kept = np.zeros((len(self.layers), n_max))
        for i, layer in enumerate(self.layers):
            s = np.asarray(layer.scores, dtype=float).mean(0)
            top = s.max() if s.size and s.max() > 0 else 1.0
            scores[i, : len(s)] = np.log10(np.clip(s / top, 1e-8, None))
            for group in layer.kept:
                kept[i, group] += 1.0 / len(layer.kept)
            kept[i, layer.d_state_before:] = np.nan
        height = max(3.0, 0.18 * len(self.layers) + 1.5)
        fig, axes = plt.subplots(1, 2, figsize=(12, height), sharey=True)
        im = axes[0].imshow(scores, aspect="auto", interpolation="nearest", cmap="viridis")
        axes[0].set_title(f"{self.criterion} score (log10, / layer max)")
        fig.colorbar(im, ax=axes[0])
        im = axes[1].imshow(kept, aspect="auto", interpolation="nearest", cmap="Greys", vmin=0, vmax=1)
        axes[1].set_title(f"kept, dark ({self.allocation}, ratio {self.ratio:g}; grey: some groups)")
        for ax in axes:
            ax.set_xlabel("state n")
        axes[0].set_ylabel("layer")
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def layer_reports(d_before: list[int], kept: list[Tensor], scores: list[Tensor]) -> list[LayerReport]:
    return [
        LayerReport(layer=i, d_state_before=n, d_state_after=int(k.shape[1]), kept=k.tolist(),
                    scores=[[float(v) for v in row] for row in s.tolist()])
        for i, (n, k, s) in enumerate(zip(d_before, kept, scores))
    ]


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def cache_bytes(model: nn.Module) -> int:
    """Bytes of the decode cache of one sequence (every layer's conv and SSM state)."""
    return sum(m.allocate_cache(1).nbytes for m in mixers_of(model))
