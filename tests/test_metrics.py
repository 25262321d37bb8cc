"""dsanet.metrics against scikit-image on the same images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dsanet.metrics import MAX_DB, MetricSums, psnr, quantize, ssim


def sk_ssim(a, b):
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=255, channel_axis=-1)


def t(img):
    return torch.from_numpy(img).permute(2, 0, 1)[None].float()


def image_pairs():
    rng = np.random.default_rng(0)
    astro = data.astronaut()[:181, 60:303]                          # odd sizes, natural content
    noisy = np.clip(astro.astype(int) + rng.normal(0, 12, astro.shape), 0, 255).astype(np.uint8)
    coffee = data.coffee()[100:164, 200:300]
    dark = (coffee // 4).astype(np.uint8)
    rand = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    rand2 = np.clip(rand.astype(int) + rng.integers(-40, 40, rand.shape), 0, 255).astype(np.uint8)
    return [(astro, noisy), (coffee, dark), (rand, rand2), (astro, np.roll(astro, 3, axis=1))]


@pytest.mark.parametrize("i", range(4))
@pytest.mark.parametrize("dtype", [None, torch.float32])
def test_psnr_ssim_match_scikit_image(i, dtype):
    a, b = image_pairs()[i]
    p = float(psnr(t(b), t(a), dtype=dtype)[0])
    s = float(ssim(t(b), t(a), dtype=dtype)[0])
    assert p == pytest.approx(peak_signal_noise_ratio(a, b), abs=1e-3)
    assert s == pytest.approx(sk_ssim(a, b), abs=1e-4 if dtype else 1e-7)


def test_batched_values_are_per_image():
    a, b = image_pairs()[0]
    c = np.clip(a.astype(int) + 30, 0, 255).astype(np.uint8)
    x = torch.cat([t(b), t(c)])
    y = torch.cat([t(a), t(a)])
    ps, ss = psnr(x, y), ssim(x, y)
    assert ps.shape == (2,) and ss.shape == (2,)
    assert float(ps[1]) == pytest.approx(peak_signal_noise_ratio(a, c), abs=1e-6)
    assert float(ss[1]) == pytest.approx(sk_ssim(a, c), abs=1e-7)


def test_quantize_and_identical_images():
    x = torch.tensor([[-0.2, 0.0, 0.5, 0.999, 1.3]])
    assert quantize(x).tolist() == [[0.0, 0.0, 128.0, 255.0, 255.0]]
    a = image_pairs()[1][0]
    assert float(psnr(t(a), t(a))[0]) == MAX_DB
    assert float(ssim(t(a), t(a))[0]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_metric_sums_per_label():
    m = MetricSums(["36", "73"])
    m.add(torch.tensor([0, 1, 1]), torch.tensor([30.0, 20.0, 22.0]), torch.tensor([0.9, 0.8, 0.6]),
          torch.tensor([25.0, 18.0, 18.0]), torch.tensor([0.8, 0.7, 0.5]))
    s = m.summary()
    assert s["73"]["count"] == 2 and s["73"]["psnr"] == pytest.approx(21.0)
    assert s["all"]["psnr"] == pytest.approx(24.0) and s["36"]["ssim_blur"] == pytest.approx(0.8)
