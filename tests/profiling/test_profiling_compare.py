"""Dense vs pruned: speedups with their interval, and ratios within noise marked as such."""

import dataclasses

import pytest

from perfmamba.profiling.compare import compare_profiles, format_comparison
from perfmamba.profiling.result import ProfileResult

JITTER = (1.0, 1.01, 0.99, 1.02, 0.98)  # tight rounds: the intervals stay narrow


def _pruned(result: ProfileResult, *, scan: float, drift: float, jitter=JITTER) -> ProfileResult:
    """`result` measured again as a pruned model: the scan does `scan` of its work (and of its FLOPs), and every
    component takes `drift` times longer, as when the second run meets a slower machine. Samples: `jitter`."""
    points = []
    for p in result.points:
        comps = []
        for c in p.components:
            factor = drift * (scan if c.name == "ssm_scan" else 1.0)
            flops = c.flops * (scan if c.name == "ssm_scan" else 1.0)
            comps.append(dataclasses.replace(c, time_s=c.time_s * factor, flops=flops,
                                             samples_s=[c.time_s * factor * j for j in jitter]))
        points.append(dataclasses.replace(p, time_s=p.time_s * drift, samples_s=[p.time_s * drift * j for j in jitter],
                                          components=comps))
    return dataclasses.replace(result, points=points, model=dataclasses.replace(result.model, name="pruned"))


def _steady(result: ProfileResult) -> ProfileResult:
    return _pruned(result, scan=1.0, drift=1.0)


def test_unchanged_components_are_drift_and_marked_within_noise(tiny_profile):
    """The issue's case: components the pruning did not touch came out 1.2x "faster"; now they set the noise floor
    and read ~, while the scan's real change stands out."""
    base = _steady(tiny_profile)
    cmp = compare_profiles(base, _pruned(tiny_profile, scan=0.4, drift=1 / 1.2))
    assert len(cmp.rows) == sum(len(p.components) + 1 for p in tiny_profile.points)
    rows = {(r.mode, r.seqlen, r.component): r for r in cmp.rows}
    for name in ("in_proj", "out_proj", "lm_head", "embedding", "norm"):
        row = rows[("prefill", 64, name)]
        assert row.same_cost and row.speedup == pytest.approx(1.2) and row.within_noise
        assert row.noise_floor == pytest.approx(1.2)
    scan = rows[("prefill", 64, "ssm_scan")]
    assert not scan.same_cost and scan.speedup == pytest.approx(1.2 / 0.4) and not scan.within_noise
    assert scan.speedup_low < scan.speedup < scan.speedup_high
    text = format_comparison(cmp)
    assert "~1.20x" in text and "3.000x" in text and "noise floor here: 1.20x" in text
    assert "interval" in text and "same cost" in text


def test_a_change_inside_the_rounds_spread_is_within_noise(tiny_profile):
    """Without drift (the noise floor is 1.0x), a 5% change whose rounds spread by 30% has an interval holding 1;
    the same change from tight rounds does not."""
    base = _steady(tiny_profile)
    wide = (1.0, 1.3, 0.7, 1.25, 0.75)
    cmp = compare_profiles(base, _pruned(tiny_profile, scan=1 / 1.05, drift=1.0, jitter=wide))
    scan = next(r for r in cmp.rows if (r.mode, r.seqlen, r.component) == ("prefill", 64, "ssm_scan"))
    assert scan.speedup == pytest.approx(1.05)
    assert scan.speedup_low < 1.0 < scan.speedup_high and scan.within_noise
    tight = compare_profiles(base, _pruned(tiny_profile, scan=1 / 1.05, drift=1.0))
    scan = next(r for r in tight.rows if (r.mode, r.seqlen, r.component) == ("prefill", 64, "ssm_scan"))
    assert scan.speedup_low > 1.0 and not scan.within_noise  # the same change, measured tightly, is real


def test_memory_change(tiny_profile):
    base = _steady(tiny_profile)
    halved = dataclasses.replace(base, points=[dataclasses.replace(p, peak_bytes=p.peak_bytes // 2)
                                               for p in base.points])
    cmp = compare_profiles(base, halved)
    total = next(r for r in cmp.rows if r.component == "total" and r.mode == "prefill" and r.seqlen == 64)
    assert total.memory_change == pytest.approx(-0.5, abs=1e-3)
