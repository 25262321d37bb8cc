"""Shared fixtures: small synthetic clips from `blurforge synth`, made once per session."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from blurforge.synth import SynthConfig, synthesize, truth_path
from blurforge.video import ffmpeg_exe, iter_frames
from dsanet.runtime import cpu_setup


@pytest.fixture(autouse=True, scope="session")
def _flush_denormals():
    """The tests' own training and inference helpers run on the CPU too."""
    cpu_setup()


def make_clip(path, **kw):
    cfg = SynthConfig(**{"width": 320, "height": 180, "frames": 320, **kw})
    synthesize(path, cfg)
    return path


def load_truth(clip):
    return json.loads(truth_path(clip).read_text())


def decode_all(clip):
    return [f.copy() for f in iter_frames(clip)]


def transcode(src, dst, *args):
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), *args, str(dst)], check=True)
    return dst


@pytest.fixture(scope="session")
def flicker_clip(tmp_path_factory):
    """Camera shake + moving object + 4% 120 Hz flicker + exposure drift."""
    return make_clip(tmp_path_factory.mktemp("clips") / "flicker.mp4", flicker=0.04, seed=3)


@pytest.fixture(scope="session")
def static_flicker_clip(tmp_path_factory):
    """No motion at all, 4% 120 Hz flicker and drift: blur and sharp must agree in brightness."""
    return make_clip(tmp_path_factory.mktemp("clips") / "static.mp4", flicker=0.04, motion=False, seed=4)


def psnr(a, b):
    """The tests' reference PSNR (uint8 codes): scikit-image's, independent of blurforge.metrics."""
    from skimage.metrics import peak_signal_noise_ratio

    a, b = np.asarray(a), np.asarray(b)
    return float("inf") if np.array_equal(a, b) else float(peak_signal_noise_ratio(b, a, data_range=255))
