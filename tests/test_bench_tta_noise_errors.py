"""benchmarks/tta_noise_errors.py: the errors a domain adds over the same clips clean."""

from __future__ import annotations

from benchmark_module import load_benchmark


def _row(domain: str, clip: str, ref: str, hyp: str) -> dict:
    return {"id": f"{domain}/{clip}", "ref": ref, "hyp": hyp}


def test_errors_added_over_the_clean_clip_and_the_share_a_cut_needs():
    mod = load_benchmark("tta_noise_errors")
    rows = [_row("clean", "a", "front center", "Front Center"),                 # 0 errors
            _row("gauss_0.01", "a", "front center", "Brent Center"),            # 1
            _row("clean", "b", "ten of clubs", "ten of clues"),                  # 1
            _row("gauss_0.01", "b", "ten of clubs", "ten of clubs"),             # 0: better than clean
            _row("tel", "b", "ten of clubs", "then of gloves")]                  # 2 (no clean-only clip a here)
    res = mod.noise_errors(rows, cut=0.5)
    g = res["gauss_0.01"]
    assert (g["errors"], g["errors_added"], g["words"]) == (1, 0, 5)
    assert (g["utterances_worse"], g["utterances_better"]) == (1, 1)
    assert g["share_of_added"] is None  # nothing added: no share to speak of
    t = res["tel"]
    assert (t["errors"], t["errors_added"], t["words"], t["errors_to_cut"], t["share_of_added"]) == (2, 1, 3, 1.0, 100.0)
    assert res["noisy"]["errors"] == 3 and res["noisy"]["errors_added"] == 1 and res["noisy"]["words"] == 8
