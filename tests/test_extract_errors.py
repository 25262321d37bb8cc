"""Bad input: one-line error, non-zero exit, no traceback, no partial shard."""
from __future__ import annotations

import errno
import os
import re
import sys

import h5py
import pytest
from click.testing import CliRunner
from conftest import make_clip, transcode

from blurforge.cli import main
from blurforge.shards import ShardWriter


def run(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


def assert_one_line_error(code, out, *words):
    assert code != 0
    lines = [ln for ln in out.strip().splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, out
    assert "Traceback" not in out
    for w in words:
        assert w in lines[0], out


def no_shards(folder):
    return not list(folder.glob("*.h5")) and not list(folder.glob(".*tmp*"))


def test_missing_file(tmp_path):
    assert_one_line_error(*run("extract", tmp_path / "nope.mp4", "--out", tmp_path), "no such file")


def test_not_a_video(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("hello")
    assert_one_line_error(*run("extract", p, "--out", tmp_path / "o"), "not a video")


def test_clip_shorter_than_window(tmp_path):
    clip = make_clip(tmp_path / "short.mp4", frames=40)
    assert_one_line_error(*run("extract", clip, "--out", tmp_path / "o", "--windows", "73"), "shorter")
    assert no_shards(tmp_path / "o") if (tmp_path / "o").exists() else True


def test_low_fps_refused_unless_forced(tmp_path):
    clip = make_clip(tmp_path / "slow.mp4", frames=120, fps=120)
    code, out = run("extract", clip, "--out", tmp_path / "o", "--windows", "9")
    assert_one_line_error(code, out, "120 fps", "ms apart", "ghost copies", "--force")
    code, out = run("extract", clip, "--out", tmp_path / "o", "--windows", "9", "--force")
    assert code == 0, out
    assert (tmp_path / "o" / "slow.h5").exists()


def test_variable_frame_rate_refused(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", frames=200)
    vfr = transcode(clip, tmp_path / "vfr.mp4", "-vf",
                    "setpts='if(lt(N,100),N/960,(N-100)/480+100/960)/TB'", "-fps_mode", "vfr")
    assert_one_line_error(*run("extract", vfr, "--out", tmp_path / "o", "--windows", "36"), "variable frame rate")


def test_truncated_stream_keeps_pairs_before_damage(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", frames=320)
    mkv = transcode(clip, tmp_path / "c.mkv", "-c", "copy")
    data = mkv.read_bytes()
    damaged = tmp_path / "damaged.mkv"
    damaged.write_bytes(data[:int(len(data) * 0.6)])
    code, out = run("extract", damaged, "--out", tmp_path / "o", "--windows", "36", "--stride", "40")
    assert_one_line_error(code, out, "stream damaged after frame", "kept")
    with h5py.File(tmp_path / "o" / "damaged.h5") as f:
        assert f.attrs["truncated"] and f.attrs["num_pairs"] >= 1
        assert f["meta/36/last"][:].max() < f.attrs["frames_decoded"] < 320


@pytest.mark.parametrize("kind", ["odd", "gray", "tenbit"])
def test_converted_inputs_are_said(tmp_path, kind):
    clip = make_clip(tmp_path / "c.mp4", frames=120)
    args = {"odd": ["-vf", "format=yuv444p,crop=319:179", "-c:v", "ffv1"],
            "gray": ["-pix_fmt", "gray", "-c:v", "ffv1"],
            "tenbit": ["-pix_fmt", "yuv420p10le", "-c:v", "ffv1"]}[kind]
    src = transcode(clip, tmp_path / f"{kind}.mkv", *args)
    code, out = run("extract", src, "--out", tmp_path / "o", "--windows", "9", "--stride", "20")
    assert code == 0, out
    said = {"odd": "cropped to 318x178", "gray": "grayscale", "tenbit": "10-bit"}[kind]
    assert said in out
    with h5py.File(tmp_path / "o" / f"{kind}.h5") as f:
        assert f["sharp"].shape[1:3] == ((178, 318) if kind == "odd" else (180, 320))
        if kind == "gray":
            s = f["sharp"][0]
            assert (s[..., 0] == s[..., 1]).all() and (s[..., 1] == s[..., 2]).all()


def run_in_terminal(*args, timeout=120) -> list[str]:
    """Run ``python -m blurforge ARGS`` on a pseudo-terminal (so progress bars draw, as for a user)
    and return what the terminal received, split into lines at carriage returns and newlines."""
    import fcntl
    import pty
    import struct
    import termios
    import time

    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
        os.execv(sys.executable, [sys.executable, "-m", "blurforge", *map(str, args)])
    out, deadline = bytearray(), time.time() + timeout
    while time.time() < deadline:
        try:
            data = os.read(fd, 65536)
        except OSError:         # EIO: the child closed the terminal
            break
        if not data:
            break
        out += data
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out.decode(errors="replace")
    return [ln for ln in re.split(r"[\r\n]+", out.decode(errors="replace")) if ln.strip()]


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_progress_has_a_total_and_warnings_get_their_own_line(tmp_path):
    """On a terminal the bar counts frames against the header's frame count (percent and ETA), and a
    warning printed while it is drawn starts a line of its own instead of landing inside the bar's."""
    clip = make_clip(tmp_path / "c.mp4", frames=160)
    src = transcode(clip, tmp_path / "odd.mkv", "-vf", "format=yuv444p,crop=319:179", "-c:v", "ffv1")
    lines = run_in_terminal("extract", src, "--out", tmp_path / "o", "--windows", "9", "--stride", "20")
    said = [ln for ln in lines if "cropped to 318x178" in ln]
    assert said and all(ln.startswith("warning: ") for ln in said), lines
    totals = [re.search(r"(\d+)%\|.*\| *(\d+)/(\d+) ", ln) for ln in lines if ln.startswith("odd.mkv:")]
    totals = [m for m in totals if m]
    assert totals, lines
    # the total is the container's estimate (duration x rate, rounded): within 3% of the 160 frames
    assert abs(int(totals[0].group(3)) - 160) <= 5, lines
    assert max(int(m.group(2)) for m in totals) == 160


def test_python_m_blurforge_runs_every_command():
    """``python -m blurforge`` is the same command as the entry point, every subcommand registered."""
    import subprocess

    res = subprocess.run([sys.executable, "-m", "blurforge", "--help"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    listed = {ln.split()[0] for ln in res.stdout.split("Commands:")[1].splitlines() if ln.strip()}
    from importlib.metadata import entry_points

    script = next(ep for ep in entry_points(group="console_scripts") if ep.name == "blurforge").load()
    assert listed == set(script.commands)  # the installed `blurforge` script's commands, no more, no fewer
    assert {"synth", "probe", "extract", "align", "inspect", "verify", "import", "split", "export",
            "card"} <= listed  # the commands the README documents


def test_unwritable_output_folder(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", frames=60)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(*run("extract", clip, "--out", blocker / "sub", "--windows", "9"), "output folder")


def test_disk_full_leaves_no_partial_shard(tmp_path, monkeypatch):
    clip = make_clip(tmp_path / "c.mp4", frames=200)
    calls = {"n": 0}
    real_add = ShardWriter.add

    def add(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_add(self, *a, **k)

    monkeypatch.setattr(ShardWriter, "add", add)
    out = tmp_path / "o"
    assert_one_line_error(*run("extract", clip, "--out", out, "--windows", "9", "--stride", "20"),
                          "No space left")
    assert calls["n"] == 2
    assert no_shards(out)


def test_bad_windows_and_curve(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", frames=60)
    assert_one_line_error(*run("extract", clip, "--windows", "abc", "--out", tmp_path), "--windows")
    assert_one_line_error(*run("extract", clip, "--crf", "nope", "--out", tmp_path, "--windows", "9"), "--crf")
