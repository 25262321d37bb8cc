"""Multi-scale MSE + FFT loss: zero at identity, Parseval for the paper's FFT-MSE, L1 FFT is different."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dsanet.losses import MultiScaleLoss, fft_loss, resize_target
from dsanet.model import DSANet, DSANetConfig, scale_sizes


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pyramid(img, scales=3):
    return [resize_target(img, s) for s in scale_sizes(*img.shape[-2:], scales)]


@pytest.mark.parametrize("fft", ["l1", "mse", "none"])
def test_loss_is_zero_for_identical_images(fft):
    torch.manual_seed(0)
    sharp = torch.rand(2, 3, 37, 53)
    crit = MultiScaleLoss(mu=0.1, fft=fft)
    loss = crit(pyramid(sharp), sharp)
    assert loss.shape == () and loss.item() == 0.0
    assert crit.last_terms["mse"] == 0.0 and crit.last_terms["total"] == 0.0


def test_loss_is_positive_and_differentiable():
    torch.manual_seed(0)
    sharp = torch.rand(1, 3, 32, 32)
    outs = [p.clone().requires_grad_() for p in pyramid(torch.rand(1, 3, 32, 32))]
    loss = MultiScaleLoss()(outs, sharp)
    loss.backward()
    assert loss.item() > 0 and all(o.grad is not None and o.grad.abs().sum() > 0 for o in outs)


def test_paper_fft_mse_is_pixel_mse_by_parseval():
    """With the orthonormal FFT, mean |F(x) - F(y)|^2 over complex entries equals the pixel MSE."""
    torch.manual_seed(0)
    for shape in [(2, 3, 17, 24), (1, 3, 64, 64), (1, 1, 5, 9)]:
        x, y = torch.rand(shape, dtype=torch.float64), torch.rand(shape, dtype=torch.float64)
        mse = F.mse_loss(x, y).item()
        assert fft_loss(x, y, "mse").item() == pytest.approx(mse, rel=1e-5)
        # so the paper's total, as written, is (1 + mu) x the multi-scale MSE
        crit = MultiScaleLoss(mu=0.1, fft="mse")
        outs = pyramid(x.float())
        total = crit(outs, y.float()).item()
        assert total == pytest.approx(1.1 * crit.last_terms["mse"], rel=1e-5)


def test_l1_fft_is_not_a_multiple_of_pixel_mse():
    """Same pixel MSE, different FFT-L1: error at one frequency vs white noise."""
    torch.manual_seed(0)
    h = w = 32
    y = torch.rand(1, 3, h, w)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    wave = torch.cos(2 * math.pi * (3 * xx / w + 2 * yy / h)).expand(1, 3, h, w)   # two FFT bins
    noise = torch.randn(1, 3, h, w)
    noise = noise * (wave.square().mean() / noise.square().mean()).sqrt()
    a, b = y + 0.05 * wave, y + 0.05 * noise
    assert F.mse_loss(a, y).item() == pytest.approx(F.mse_loss(b, y).item(), rel=1e-5)
    la, lb = fft_loss(a, y, "l1").item(), fft_loss(b, y, "l1").item()
    assert lb > 5 * la, (la, lb)
    # while the paper's squared version cannot tell them apart
    assert fft_loss(a, y, "mse").item() == pytest.approx(fft_loss(b, y, "mse").item(), rel=1e-5)


def test_multiscale_loss_is_the_sum_over_scales():
    torch.manual_seed(0)
    sharp = torch.rand(2, 3, 37, 53)
    outs = pyramid(torch.rand(2, 3, 37, 53))
    crit = MultiScaleLoss(mu=0.1, fft="l1")
    got = crit(outs, sharp)
    targets = pyramid(sharp)
    mse = sum(F.mse_loss(o, t) for o, t in zip(outs, targets))
    fft = sum(torch.view_as_real(torch.fft.fft2(o - t, norm="ortho")).abs().mean()
              for o, t in zip(outs, targets))
    torch.testing.assert_close(got, mse + 0.1 * fft)
    terms = crit.last_terms
    assert set(terms) == {"mse", "fft", "total"} and all(isinstance(v, float) for v in terms.values())
    assert terms["mse"] == pytest.approx(mse.item(), rel=1e-5)
    assert terms["fft"] == pytest.approx(fft.item(), rel=1e-5)


def test_targets_match_the_network_input_pyramid():
    """The loss resizes ``sharp`` exactly as DSANet resizes ``blur`` (replicate pad, 2x2 mean)."""
    torch.manual_seed(0)
    img = torch.rand(1, 3, 37, 53)
    net = DSANet(DSANetConfig.tiny())
    for a, b in zip(net.pyramid(img), pyramid(img)):
        torch.testing.assert_close(a, b)
    # on even sizes that is bilinear x1/2 without antialiasing
    even = torch.rand(1, 3, 32, 48)
    torch.testing.assert_close(resize_target(even, (16, 24)),
                               F.interpolate(even, size=(16, 24), mode="bilinear", align_corners=False))
    # other sizes fall back to an antialiased bilinear resize
    assert resize_target(img, (7, 9)).shape[-2:] == (7, 9)


def test_fft_runs_in_float32_under_autocast():
    torch.manual_seed(0)
    sharp = torch.rand(1, 3, 32, 32)
    outs = pyramid(torch.rand(1, 3, 32, 32))
    crit = MultiScaleLoss()
    ref = crit(outs, sharp)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = crit([o.bfloat16() for o in outs], sharp)
        f = fft_loss(outs[-1].bfloat16(), sharp.bfloat16())
    assert got.dtype == torch.float32 and f.dtype == torch.float32
    assert got.item() == pytest.approx(ref.item(), rel=0.02)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        MultiScaleLoss(fft="l2")
    with pytest.raises(ValueError):
        fft_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), "l2")
