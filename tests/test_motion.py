"""Trajectory and local motion on small frames with known warps (independent of synth)."""
import cv2
import numpy as np

from blurforge.interpolate import merge_boxes
from blurforge.motion import FlowMeter, centroid, to_full, track_window, window_motion


def _texture(seed=0, size=(135, 240)):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.uniform(0, 255, size).astype(np.float32), (0, 0), 2.5) * 4 - 384


def _similarity(tx, ty, deg, zoom, w, h):
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), deg, zoom)
    m[:, 2] += (tx, ty)
    return m


def test_frames_register_to_the_centre_with_known_similarity_warps():
    """Frames made by warping one texture with known shift, roll and zoom (and a gain, as flicker
    would) are tracked to within a few hundredths of a pixel over the picture."""
    base = _texture()
    h, w = base.shape
    n, c = 31, 15
    truth, frames = [], []
    for t in range(n):
        s = (t - c) / c
        m = _similarity(6 * s + 2 * s * s, -4 * s, 0.3 * s, 1 + 0.004 * s, w, h)   # accelerating, rolling
        truth.append(m)
        # content at x in the centre frame appears at m x in frame t: frame_t(y) = base(m^-1 y)
        img = cv2.warpAffine(base, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frames.append(np.clip(img * (1 + 0.03 * np.sin(t)), 0, 255).astype(np.uint8))
    truth = np.array(truth)
    centre_inv = np.linalg.inv(np.vstack([truth[c], [0, 0, 1]]))
    rel = np.array([np.vstack([m, [0, 0, 1]]) @ centre_inv for m in truth])
    track = track_window(frames, c)
    ys, xs = np.mgrid[10:h - 10:8, 10:w - 10:8]
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    errs = [np.hypot(*((np.vstack([track.warps[t], [0, 0, 1]]) - rel[t]) @ pts)[:2]).mean() for t in range(n)]
    assert max(errs) < 0.05, np.round(errs, 3)
    assert track.inliers.min() > 0.8
    np.testing.assert_allclose(track.warps[c], np.eye(2, 3))


def test_centroid_is_the_weighted_mean_warp_and_scales_to_full_resolution():
    small = np.array([np.eye(2, 3) + [[0, 0, dx], [0, 0, 0]] for dx in (-2.0, 0.0, 4.0)])
    full = to_full(small, (90, 160), (360, 640))            # 4x: a 1 px shift is 4 px
    np.testing.assert_allclose(full[:, 0, 2], [-8.0, 0.0, 16.0], atol=1e-9)
    c = centroid(full, np.array([0.25, 0.5, 0.25]))
    np.testing.assert_allclose(c[0, 2], 2.0, atol=1e-9)
    np.testing.assert_allclose(c[:2, :2], np.eye(2), atol=1e-12)


def _union(boxes):
    """(x, y, w, h) boxes -> the (x, y, w, h) box around them all."""
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    return x0, y0, max(b[0] + b[2] for b in boxes) - x0, max(b[1] + b[3] for b in boxes) - y0


def test_flow_finds_a_fast_patch_on_a_still_background():
    """A textured square moving 5 small px (x4 = 20 full px) over a still background: the motion is
    the square's, the moving share about its area; the camera part alone is exact."""
    bg = _texture(1)
    patch = _texture(2, (40, 40))
    prev, cur = bg.copy(), bg.copy()
    prev[50:90, 60:100] = patch
    cur[50:90, 65:105] = patch
    meter = FlowMeter()
    step = meter.step(prev.astype(np.uint8), cur.astype(np.uint8), np.eye(2, 3), 4.0)
    assert abs(step.speed / 20.0 - 1) < 0.2, step
    assert 0.02 < step.share < 0.15, step
    x, y, bw, bh = step.box
    assert 50 <= x + bw / 2 <= 110 and 40 <= y + bh / 2 <= 100
    still = meter.step(bg.astype(np.uint8), bg.astype(np.uint8), np.eye(2, 3), 4.0)
    assert still.speed < 0.5 and still.share == 0 and still.box is None
    pan = np.float32([[1, 0, 0.5], [0, 1, 0]])        # the camera moves 0.5 small px = 2 full px
    moved = cv2.warpAffine(bg, pan, (bg.shape[1], bg.shape[0]), borderMode=cv2.BORDER_REFLECT)
    cam = meter.step(bg.astype(np.uint8), moved.astype(np.uint8), pan, 4.0)
    assert abs(cam.speed - 2.0) < 0.05 and cam.share > 0.95
    assert cam.sub_boxes == ((0, 0, bg.shape[1], bg.shape[0]),)   # 2 px/frame: all of it needs sub-frames
    assert _union(step.sub_boxes) == step.box and still.sub_boxes == ()
    shake = np.float32([[1, 0, 0.3], [0, 1, 0]])      # 1.2 full px: past 1 px/frame, under SUBSTEP_PX
    shaken = cv2.warpAffine(bg, shake, (bg.shape[1], bg.shape[0]), borderMode=cv2.BORDER_REFLECT)
    small = meter.step(bg.astype(np.uint8), shaken.astype(np.uint8), shake, 4.0)
    assert small.share > 0.95 and small.sub_boxes == (), small
    two = cur.copy()                                    # a second patch, far from the first: a part of its own
    two[10:40, 150:190] = bg[10:40, 140:180]
    both = meter.step(prev.astype(np.uint8), two.astype(np.uint8), np.eye(2, 3), 4.0)
    grown = [(x - 6, y - 6, x + w + 6, y + h + 6) for x, y, w, h in both.sub_boxes]   # as extract pads them
    assert len(merge_boxes(grown)) == 2, both
    assert window_motion([still, step, step, still]) == (step.speed, step.share)


def test_a_high_contrast_moving_object_does_not_drag_the_camera():
    """A faint background and a strongly textured square moving 1 px/frame: the strongest gradients
    are the square's, yet the warps stay on the still background (points spread over the picture)."""
    bg = (_texture(3) - 128) * 0.15 + 128
    patch = _texture(4, (50, 50))
    frames = []
    for t in range(25):
        img = bg.copy()
        img[40:90, 20 + t:70 + t] = patch
        frames.append(img.astype(np.uint8))
    track = track_window(frames, 12)
    ys, xs = np.mgrid[10:125:8, 10:230:8]
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    worst = max(np.hypot(*((track.warps[t] - np.eye(2, 3)) @ pts)).max() for t in range(25))
    assert worst < 0.1, worst


def test_kth_largest_is_exact_with_ties_and_sparse_peaks():
    from blurforge.motion import _kth_largest

    rng = np.random.default_rng(3)
    cases = [rng.random(32400), np.full(5000, 0.5), np.r_[np.zeros(32350), 9 * rng.random(50)], rng.random(7)]
    for a in cases:
        a = a.astype(np.float32)
        for k in (1, 3, 81):
            if k <= a.size:
                assert _kth_largest(a, k) == float(np.sort(a)[-k])
