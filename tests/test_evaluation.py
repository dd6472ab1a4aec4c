import json
import math

import numpy as np
import pytest
import torch

from diffusion4d.evaluation.clip import clip_score
from diffusion4d.evaluation.fvd import (
    SingularCovarianceWarning,
    feature_statistics,
    frechet_distance,
    fvd_from_features,
    fvd_result,
    trace_sqrt_product,
)
from diffusion4d.evaluation.pretrained import MissingWeights, load_state_dict_safely, require_weights
from diffusion4d.evaluation.report import format_duration, format_table1, write_report
from diffusion4d.metrics import psnr, ssim

# --- PSNR / SSIM ----------------------------------------------------------------------------------------------


def test_psnr_of_constant_images_differing_by_a_tenth_is_20_db():
    x = torch.full((2, 3, 8, 8), 0.5, dtype=torch.float64)
    assert psnr(x, x + 0.1).tolist() == pytest.approx([20.0, 20.0], abs=1e-9)


def test_psnr_scales_with_data_range_and_accepts_one_image():
    x = torch.full((3, 4, 4), 127.5, dtype=torch.float64)
    # a difference of 25.5 on a 0..255 scale is a tenth of the range: still 20 dB
    assert psnr(x, x + 25.5, data_range=255.0).item() == pytest.approx(20.0, abs=1e-9)


def test_psnr_of_identical_images_is_inf():
    x = torch.rand(1, 3, 8, 8)
    assert math.isinf(psnr(x, x).item()) and psnr(x, x).item() > 0


def test_psnr_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        psnr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))


def test_shared_ssim_is_one_on_identical_images():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)


# --- Fréchet distance -----------------------------------------------------------------------------------------


def test_frechet_distance_of_identical_feature_sets_is_zero():
    feats = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    assert fvd_from_features(feats, feats) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_diagonal_gaussians_matches_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 3.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 2.0])
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_closed_form_for_full_covariances():
    # For commuting covariances Σ1 = Q D1 Qᵀ, Σ2 = Q D2 Qᵀ the trace term is Σ (√d1 − √d2)² as well
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))
    d1, d2 = np.array([1.0, 2.0, 3.0, 4.0]), np.array([4.0, 0.5, 3.0, 1.0])
    mu1, mu2 = np.zeros(4), np.ones(4)
    expected = 4.0 + ((np.sqrt(d1) - np.sqrt(d2)) ** 2).sum()
    got = frechet_distance(mu1, q @ np.diag(d1) @ q.T, mu2, q @ np.diag(d2) @ q.T)
    assert got == pytest.approx(expected, rel=1e-8)


def test_fvd_with_fewer_videos_than_dimensions_is_exact_symmetric_and_reports_the_ranks():
    # 5 and 7 videos of 32-d features (the paper's ~20 test items against 400-d I3D logits, scaled down):
    # rank-deficient covariances, as the small-sample FVD always has
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(5, 32, generator=g), torch.randn(7, 32, generator=g) * 2 + 1
    with pytest.warns(SingularCovarianceWarning, match=r"5 generated and 7 reference videos.*ranks 4 and 6"):
        d = fvd_from_features(a, b)
    assert math.isfinite(d) and d > 0
    result = fvd_result(a, b)
    assert (result.value, result.items, result.dim, result.ranks) == (d, (5, 7), 32, (4, 6)) and result.singular
    assert fvd_result(b, a).value == pytest.approx(d, rel=1e-10)
    with pytest.warns(SingularCovarianceWarning):
        assert fvd_from_features(a, a.clone()) == pytest.approx(0.0, abs=1e-9 * d)
    # an independent route through the data: with centred rows A [N, D], B [M, D], Σ1Σ2 has the nonzero
    # eigenvalues of (ABᵀ)(BAᵀ)/((N−1)(M−1)), so Tr((Σ1Σ2)^½) is the nuclear norm of ABᵀ/√((N−1)(M−1))
    a64, b64 = a.double(), b.double()
    A, B = a64 - a64.mean(0), b64 - b64.mean(0)
    trace_sqrt = torch.linalg.svdvals(A @ B.T).sum() / math.sqrt(4 * 6)
    expected = (a64.mean(0) - b64.mean(0)).pow(2).sum() + A.pow(2).sum() / 4 + B.pow(2).sum() / 6 - 2 * trace_sqrt
    assert d == pytest.approx(expected.item(), rel=1e-10)


def test_trace_sqrt_product_agrees_with_a_general_matrix_square_root_on_full_rank_covariances():
    import scipy.linalg

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40, 6)), rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6))
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    expected = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    assert trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-10)
    assert trace_sqrt_product(s2, s1) == pytest.approx(expected, rel=1e-10)
    assert fvd_result(x, y).ranks == (6, 6) and not fvd_result(x, y).singular


def test_fvd_over_fewer_than_two_videos_is_an_error():
    feats = torch.randn(3, 8, generator=torch.Generator().manual_seed(3))
    with pytest.raises(ValueError, match="at least 2 videos on each side.*got 1 generated and 3 reference"):
        fvd_from_features(feats[:1], feats)
    with pytest.raises(ValueError, match="at least 2 videos"):
        fvd_result(feats, feats[:0])
    with pytest.raises(ValueError, match="of one D"):
        fvd_result(feats, feats[:, :4])


def test_feature_statistics_shapes_and_values():
    feats = np.array([[0.0, 0.0], [2.0, 4.0]])
    mu, sigma = feature_statistics(feats)
    assert mu.tolist() == [1.0, 2.0]
    assert sigma.tolist() == [[2.0, 4.0], [4.0, 8.0]]  # unbiased (N − 1) covariance
    with pytest.raises(ValueError):
        feature_statistics(np.zeros((1, 2)))


# --- CLIP score -----------------------------------------------------------------------------------------------


def test_clip_score_is_one_for_identical_embeddings_symmetric_and_bounded():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 16, generator=g), torch.randn(5, 16, generator=g)
    assert clip_score(a, a * 3.0).tolist() == pytest.approx([1.0] * 5, abs=1e-12)  # scale-free
    assert torch.equal(clip_score(a, b), clip_score(b, a))
    s = clip_score(a, b)
    assert s.shape == (5,) and bool(((s >= -1) & (s <= 1)).all())
    assert clip_score(a, -a).tolist() == pytest.approx([-1.0] * 5, abs=1e-12)


def test_clip_score_broadcasts_one_reference_over_all_views():
    g = torch.Generator().manual_seed(0)
    ref, views = torch.randn(16, generator=g), torch.randn(24, 16, generator=g)
    s = clip_score(ref, views)
    assert s.shape == (24,)
    assert torch.allclose(s, clip_score(ref[None].expand(24, 16), views))
    with pytest.raises(ValueError):
        clip_score(torch.randn(3, 16), views)


# --- safe weight loading --------------------------------------------------------------------------------------


class _NotAStateDict:
    def __init__(self):
        self.payload = 1


def test_safetensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    sd = {"w": torch.randn(3, 4), "b": torch.arange(4.0)}
    save_file(sd, str(tmp_path / "m.safetensors"))
    got = load_state_dict_safely(tmp_path / "m.safetensors")
    assert set(got) == {"w", "b"} and all(torch.equal(got[k], sd[k]) for k in sd)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_weights_only_pickle_round_trip(tmp_path, suffix):
    sd = {"w": torch.randn(2, 2), "nested": {"b": torch.ones(3)}}
    torch.save(sd, tmp_path / f"m{suffix}")
    got = load_state_dict_safely(tmp_path / f"m{suffix}")
    assert torch.equal(got["w"], sd["w"]) and torch.equal(got["nested"]["b"], sd["nested"]["b"])


def test_pickle_with_an_arbitrary_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"obj": _NotAStateDict()}, path)
    with pytest.raises(ValueError, match="evil.pt.*refused"):
        load_state_dict_safely(path)


def test_unknown_format_and_broken_files_are_refused(tmp_path):
    (tmp_path / "m.ckpt").write_bytes(b"whatever")
    with pytest.raises(ValueError, match="m.ckpt.*refused"):
        load_state_dict_safely(tmp_path / "m.ckpt")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="refused"):
        load_state_dict_safely(tmp_path / "bad.safetensors")


def test_missing_weights_message(tmp_path):
    with pytest.raises(MissingWeights) as exc:
        require_weights("LPIPS", "--lpips-weights", None)
    assert str(exc.value) == "LPIPS skipped: provide --lpips-weights PATH (no path given)"
    with pytest.raises(MissingWeights, match="is not a file"):
        require_weights("LPIPS", "--lpips-weights", tmp_path / "absent.safetensors")
    (tmp_path / "w.safetensors").write_bytes(b"x")
    assert require_weights("LPIPS", "--lpips-weights", tmp_path / "w.safetensors") == tmp_path / "w.safetensors"


# --- report ---------------------------------------------------------------------------------------------------

GOLDEN = """\
| Task | CLIP-F ↑ | CLIP-O ↑ | SSIM ↑ | PSNR ↑ | LPIPS ↓ | FVD ↓ | Generation time ↓ |
|---|---:|---:|---:|---:|---:|---:|---:|
| Image-to-4D | 0.89 | 0.75 | 0.83 | 16.7 | – | 560.8 | 8m |
| Text-to-4D | 0.81 | 0.65 | – | – | – | – | 1h30m |

– SSIM (Text-to-4D): no ground-truth orbit for text prompts  
– PSNR (Text-to-4D): no ground-truth orbit for text prompts  
– LPIPS (Image-to-4D, Text-to-4D): LPIPS skipped: provide --lpips-weights PATH (no path given)  
– FVD (Text-to-4D): not computed (no reason recorded)  
"""

ROWS = {
    "Image-to-4D": {"clip_f": 0.891, "clip_o": 0.7512, "ssim": 0.83, "psnr": 16.71, "lpips": None, "fvd": 560.84,
                    "generation_time_s": 480.0},
    "Text-to-4D": {"clip_f": 0.81, "clip_o": 0.654, "ssim": None, "psnr": None, "lpips": None,
                   "generation_time_s": 5400.0},
}
NOTES = {
    "lpips": "LPIPS skipped: provide --lpips-weights PATH (no path given)",
    "Text-to-4D/ssim": "no ground-truth orbit for text prompts",
    "Text-to-4D/psnr": "no ground-truth orbit for text prompts",
}


def test_format_table1_golden():
    assert format_table1(ROWS, NOTES) == GOLDEN


def test_format_table1_rejects_unknown_metrics_and_shows_inf():
    with pytest.raises(ValueError, match="unknown metrics"):
        format_table1({"t": {"clipf": 0.5}})
    table = format_table1({"t": {"psnr": float("inf")}})
    assert "| ∞ |" in table


def test_format_duration():
    assert [format_duration(s) for s in (42.0, 480, 5400, 82800)] == ["42.0s", "8m", "1h30m", "23h"]


def test_write_report(tmp_path):
    rows = {"Image-to-4D": {**ROWS["Image-to-4D"], "psnr": float("inf")}}
    md_path, json_path = write_report(tmp_path / "out", rows, NOTES)
    assert md_path.read_text(encoding="utf-8").endswith(format_table1(rows, NOTES))
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert data["rows"]["Image-to-4D"]["psnr"] == "inf" and data["rows"]["Image-to-4D"]["lpips"] is None
    assert data["notes"] == NOTES
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.json", "report.md"]  # no temp files left
