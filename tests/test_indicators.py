"""The report's indicators called directly, without writing or parsing a report.

Each indicator is one function of wgan.report.diagnostics returning an Indicator; the report's list of
them (wgan.report.findings) and its verdict read those objects. Constructed inputs: the seed-like
metrics of test_report and the structured images of test_diagnostics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_diagnostics import perturbed, structured_images
from test_report import seed_like_metrics

from wgan.config import WGANConfig
from wgan.report import diagnostics as dg
from wgan.report import findings as report_findings
from wgan.report.diagnostics import FAIL, NOT_RUN, PASS, WARN, Indicator
from wgan.report.evidence import RunEvidence, evaluations
from wgan.report.findings import SampleIndicator, SampleMeasurements, judge_indicators, recommendation, verdict


def as_series(rows: list[dict]) -> dict[str, np.ndarray]:
    """Rows as the report reads them: one array per key, NaN where a row lacks the key."""
    keys = list(dict.fromkeys(key for row in rows for key in row))
    series = {key: np.array([row.get(key, np.nan) for row in rows], dtype=np.float64) for key in keys}
    series["epoch"] = series["epoch"].astype(np.int64)
    return series


@pytest.fixture(scope="module")
def reals() -> torch.Tensor:
    return structured_images(300, seed=1)


def evidence_for(series: dict[str, np.ndarray], tmp_path: Path, **fields) -> RunEvidence:
    config = WGANConfig(epochs=int(series["epoch"][-1]))
    return RunEvidence(path=tmp_path, config=config, info={"status": "completed"}, series=series, **fields)


# ----------------------------------------------------------------------------------------------
# one function per indicator
# ----------------------------------------------------------------------------------------------
def test_seed_like_series_the_w_sign_indicator_says_fakes_are_scored_above_reals() -> None:
    indicator = dg.w_sign_indicator(as_series(seed_like_metrics(n=2000)))
    assert isinstance(indicator, Indicator)
    assert indicator.status == FAIL
    assert "scores fakes ABOVE reals" in indicator.observation
    assert indicator.data["final_w"] < -4 and indicator.data["negative_share"] > 0.9
    assert indicator.threshold == "> 0"


def test_a_healthy_series_passes_the_w_sign_indicator() -> None:
    rng = np.random.default_rng(0)
    series = as_series(seed_like_metrics(n=500))
    series["wasserstein_estimate"] = 0.5 + 0.02 * rng.standard_normal(500)
    indicator = dg.w_sign_indicator(series)
    assert indicator.status == PASS and "scores reals above fakes" in indicator.observation


def test_a_collapsed_sample_set_fails_the_mode_collapse_indicator(reals: torch.Tensor) -> None:
    repeated = perturbed(structured_images(3, seed=11), torch.arange(64) % 3, noise=0.03, seed=2)
    indicator = dg.mode_collapse_indicator(dg.mode_collapse(repeated, reals))
    assert indicator.status == FAIL and indicator.observation.startswith("COLLAPSED: ")
    assert "3 distinct cluster(s)" in indicator.observation
    distinct = dg.mode_collapse_indicator(dg.mode_collapse(structured_images(64, seed=12), reals))
    assert distinct.status == PASS and not distinct.observation.startswith("COLLAPSED")


def test_sample_indicators_without_samples_are_not_run_and_say_why() -> None:
    for build in (dg.mode_collapse_indicator, dg.memorisation_indicator, dg.fidelity_indicator):
        indicator = build(None, missing="no reference.npz in the run folder")
        assert indicator.status == NOT_RUN
        assert indicator.observation == "not checked: no reference.npz in the run folder"
        assert indicator.threshold == "–"


def test_memorised_samples_warn_and_say_they_copy(reals: torch.Tensor) -> None:
    copies = perturbed(reals, torch.arange(64), noise=0.02, seed=2)
    indicator = dg.memorisation_indicator(dg.nearest_neighbours(copies, reals))
    assert indicator.status == WARN and indicator.observation.endswith(": samples copy training images")


def test_memorised_samples_get_the_advice_for_copies(reals: torch.Tensor, tmp_path: Path) -> None:
    copies = perturbed(reals, torch.arange(64), noise=0.02, seed=2)
    indicator = dg.memorisation_indicator(dg.nearest_neighbours(copies, reals))
    evidence = evidence_for(as_series(seed_like_metrics(n=300)), tmp_path)
    advice = recommendation(evidence, {"memorisation": indicator}, None)
    assert advice == "Samples are copies of training images: use an earlier checkpoint or fewer epochs."


@pytest.mark.parametrize(
    "classifier_verdict, status", [("match", PASS), ("distinguishable", WARN), ("unlike data", FAIL)]
)
def test_fidelity_indicator_status_follows_the_classifier(classifier_verdict: str, status: str) -> None:
    measured = {"accuracy": 0.8, "verdict": classifier_verdict, "n_fake": 64, "n_real": 64, "folds": 4}
    indicator = dg.fidelity_indicator(measured)
    assert indicator.status == status and indicator.data == {"accuracy": 0.8}


def test_critic_health_returns_indicators_that_read_like_the_old_dicts() -> None:
    out = dg.critic_health(as_series(seed_like_metrics(n=1000)), clip_threshold=0.01)
    assert list(out) == ["numerics", "w_sign", "w_trend", "clip", "oscillation"]
    assert all(isinstance(indicator, Indicator) for indicator in out.values())
    assert out["numerics"]["status"] == out["numerics"].status == PASS
    assert out["numerics"]["first_nan_epoch"] is None and out["numerics"]["name"] == "Numerical health"
    with pytest.raises(KeyError):
        out["numerics"]["no such number"]


# ----------------------------------------------------------------------------------------------
# the verdict, the advice and the registry read Indicator objects
# ----------------------------------------------------------------------------------------------
def passing(name: str) -> Indicator:
    return Indicator(name, PASS, "fine", "a rule", "a threshold")


def test_verdict_reads_indicator_objects() -> None:
    keys = ("numerics", "w_sign", "w_trend", "clip", "oscillation", "memorisation", "fidelity")
    indicators = {key: passing(key) for key in keys}
    collapsed = dict(indicators, mode_collapse=Indicator("Mode collapse", FAIL, "COLLAPSED", "r", "t"))
    result = verdict(collapsed)
    assert result["stability"] == "❌ UNSTABLE (mode collapse)" and result["collapsed"] is True
    assert result["quality"].startswith("❌ Poor (mode collapse")
    marginal = verdict(dict(indicators, clip=Indicator("Clip saturation", WARN, "o", "r", "t")))
    assert marginal["stability"] == "⚠️ MARGINAL (clip saturation)"


def test_advice_comes_from_the_indicators(tmp_path: Path) -> None:
    series = as_series(seed_like_metrics(n=300))
    evidence = evidence_for(series, tmp_path)
    indicators = {"numerics": Indicator("Numerical health", FAIL, "o", "r", "t", {"first_nan_epoch": 7})}
    assert recommendation(evidence, indicators, None).startswith("Losses became NaN/Inf at epoch 7:")
    assert recommendation(evidence, {"numerics": passing("n")}, None) == "Keep this run: every indicator passed."


def test_one_registry_entry_adds_a_quality_indicator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a FID/KID indicator will be: one more SampleIndicator, read from the evidence."""

    def kid(evidence: RunEvidence, samples: SampleMeasurements) -> Indicator:
        last = evidence.evaluations.values["kid"][-1]
        return Indicator("KID", FAIL if last > 0.1 else PASS, f"KID {last:.3f}", "KID at the last evaluation", "<= 0.1")

    entry = SampleIndicator("kid", kid, quality_reason="samples' Inception features are far from the reals'")
    monkeypatch.setattr(report_findings, "SAMPLE_INDICATORS", report_findings.SAMPLE_INDICATORS + (entry,))
    rows = seed_like_metrics(n=300)
    rows[149]["kid"], rows[299]["kid"] = 0.3, 0.2
    evidence = evidence_for(as_series(rows), tmp_path)
    indicators = judge_indicators(evidence, SampleMeasurements(missing="no samples here"))
    assert list(indicators)[-1] == "kid" and indicators["kid"].status == FAIL
    good = {key: passing(key) for key in indicators if key != "kid"}
    result = verdict(dict(good, kid=indicators["kid"]))
    assert result["stability"] == "✅ STABLE"  # a quality-only failure leaves the stability alone
    assert result["quality"] == "❌ Poor (samples' Inception features are far from the reals')"


def test_evaluations_are_the_rows_that_carry_fid_or_kid() -> None:
    rows = seed_like_metrics(n=10)
    rows[4]["kid"], rows[9]["kid"], rows[9]["fid"] = 0.05, 0.04, 41.0
    found = evaluations(as_series(rows))
    assert list(found.epochs) == [5, 10]
    np.testing.assert_array_equal(found.values["kid"], [0.05, 0.04])
    assert np.isnan(found.values["fid"][0]) and found.values["fid"][1] == 41.0
    assert not evaluations(as_series(seed_like_metrics(n=10)))  # no evaluated row
