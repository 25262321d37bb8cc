"""dsanet.train / dsanet.checkpoint: resume continuity, atomic checkpoints, DDP replicas, NaN stop,
config round trip and one-line errors. Tiny models, 32-64 px crops: each run takes seconds."""
from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path

import pytest
import tomli_w
import torch
from click.testing import CliRunner
from test_data import box_blur, make_shard, smooth_images

import dsanet.checkpoint as ckpt_mod
import dsanet.train as train_mod
from dsanet.checkpoint import CheckpointError, load_checkpoint, load_resume, save_checkpoint
from dsanet.train import TrainConfig, TrainingError, main, read_config_file, run

SMALL = {"width": 4, "blocks": 1, "kernel_size": 3}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    imgs = smooth_images(4, 64, 80, seed=0)
    train = make_shard(d / "train.h5", imgs, {"9": [box_blur(i) for i in imgs],
                                             "5": [box_blur(i, 5) for i in imgs]})
    vimgs = smooth_images(2, 64, 64, seed=1)
    val = make_shard(d / "val.h5", vimgs, {"9": [box_blur(i) for i in vimgs]})
    return train, val


def cfg_for(sh, out, **kw):
    train, val = sh
    base = dict(shards=[str(train)], val_shards=[str(val)], out=str(out), tiny=True, model=dict(SMALL),
                steps=6, batch=2, crop=32, workers=0, log_every=1, val_every=3, ckpt_every=2, lr=1e-3,
                progress=False, tensorboard=False, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def losses(out):
    recs = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if r["kind"] == "train"}


def test_resume_continues_the_interrupted_run(shards, tmp_path):
    full = run(cfg_for(shards, tmp_path / "full"))
    assert full["step"] == 6
    a = run(cfg_for(shards, tmp_path / "split", stop_after=3))
    assert a["step"] == 3 and not (tmp_path / "split" / "model.safetensors").exists()
    b = run(cfg_for(shards, tmp_path / "split"), resume=True)
    assert b["step"] == 6
    lf, ls = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert sorted(ls) == sorted(lf) == [1, 2, 3, 4, 5, 6]
    for s in lf:        # same data, same RNG, same optimizer state: the curves coincide
        assert ls[s] == pytest.approx(lf[s], rel=1e-4, abs=1e-7), (s, ls[s], lf[s])
    wf = full["model"].state_dict()
    ws = b["model"].state_dict()
    assert all(torch.allclose(wf[k], ws[k], atol=1e-5) for k in wf)
    # outputs of a finished run
    run_dir = tmp_path / "full"
    for name in ("last.pt", "last.prev.pt", "best.pt", "model.safetensors", "config.json", "train.toml"):
        assert (run_dir / name).exists(), name
    st = load_checkpoint(run_dir / "last.pt")
    assert st["step"] == 6 and st["config"]["model"]["width"] == 4 and len(st["shards_fingerprint"]) == 16
    assert set(st["rng"][0]) == {"python", "numpy", "torch", "cuda"}
    vals = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    v = [r for r in vals if r["kind"] == "val"]
    assert [r["step"] for r in v] == [3, 6] and "9" in v[0]["labels"]
    assert {"psnr", "ssim", "psnr_blur", "ssim_blur"} <= set(v[0])


def test_killed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    good = {"step": 1, "model": {"w": torch.ones(3)}, "config": {"model": {}}}
    save_checkpoint(good, path)
    real_save = torch.save

    def dying_save(obj, fh, *a, **k):
        fh.write(b"PK\x03\x04 partial bytes")      # a torn write, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({**good, "step": 2}, path)
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    assert load_checkpoint(path)["step"] == 1
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    # second save: previous one is kept as last.prev.pt
    save_checkpoint({**good, "step": 3}, path)
    assert load_checkpoint(tmp_path / "last.prev.pt")["step"] == 1
    # a corrupt last.pt: resume falls back to last.prev.pt, with a one-line reason
    path.write_bytes(path.read_bytes()[:100])
    notes = []
    st, used = load_resume(tmp_path, log=notes.append)
    assert st["step"] == 1 and used.name == "last.prev.pt" and "corrupt" in notes[0]
    (tmp_path / "last.prev.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError) as e:
        load_resume(tmp_path, log=lambda m: None)
    assert "\n" not in str(e.value) and "cannot resume" in str(e.value)


def test_resume_rejects_mismatch(shards, tmp_path):
    run(cfg_for(shards, tmp_path / "r", steps=2, val_shards=[]))
    c = cfg_for(shards, tmp_path / "r", steps=2, val_shards=[], model={**SMALL, "width": 6})
    with pytest.raises(CheckpointError, match="model config differs"):
        run(c, resume=True, explicit={"model"})
    with pytest.raises(CheckpointError, match="trained with crop=32"):
        run(cfg_for(shards, tmp_path / "r", steps=2, val_shards=[], crop=48), resume=True, explicit={"crop"})
    other = make_shard(tmp_path / "other.h5", smooth_images(2, 64, 64, seed=9),
                       {"9": smooth_images(2, 64, 64, seed=8)})
    with pytest.raises(CheckpointError, match="different shard list"):
        run(cfg_for(shards, tmp_path / "r", shards=[str(other)], windows="9", val_shards=[]), resume=True)
    with pytest.raises(TrainingError, match="already holds a run"):       # no silent clobbering
        run(cfg_for(shards, tmp_path / "r", steps=2, val_shards=[]))
    assert run(cfg_for(shards, tmp_path / "r", steps=1, val_shards=[], overwrite=True))["step"] == 1


class NanAt(torch.nn.Module):
    """Wraps the real loss; returns NaN from its ``at``-th call on."""
    at = 4

    def __init__(self, **kw):
        super().__init__()
        from dsanet.losses import MultiScaleLoss
        self.inner, self.calls = MultiScaleLoss(**kw), 0

    def forward(self, outs, sharp):
        self.calls += 1
        loss = self.inner(outs, sharp)
        return loss * float("nan") if self.calls >= self.at else loss


def test_nan_loss_stops_with_clear_message(shards, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "MultiScaleLoss", NanAt)
    out = tmp_path / "nan"
    res = CliRunner().invoke(main, ["--shards", str(shards[0]), "--out", str(out), "--tiny",
                                    "--model-opt", "width=4", "--steps", "8", "--batch", "2", "--crop", "32",
                                    "--workers", "0", "--ckpt-every", "2", "--log-every", "4",
                                    "--no-progress", "--no-tensorboard"])
    assert res.exit_code == 1
    msg = res.output.strip().splitlines()[-1]
    assert "NaN" in msg and "step 4" in msg and "last.pt" in msg and "Traceback" not in res.output
    st = load_checkpoint(out / "last.pt")            # the step-2 checkpoint, finite weights
    assert st["step"] == 2
    assert all(torch.isfinite(v).all() for v in st["model"].values())
    assert not (out / "model.safetensors").exists()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg_kw, result_dir):
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    res = run(TrainConfig(**cfg_kw))
    torch.save({k: v.detach().clone() for k, v in res["model"].state_dict().items()},
               Path(result_dir) / f"rank{rank}.pt")


def test_ddp_two_cpu_processes_keep_replicas_identical(shards, tmp_path):
    train, val = shards
    kw = dict(shards=[str(train)], val_shards=[str(val)], out=str(tmp_path / "ddp"), tiny=True,
              model=dict(SMALL), steps=3, batch=2, crop=32, workers=0, log_every=1, val_every=3,
              ckpt_every=3, lr=1e-3, progress=False, tensorboard=False, device="cpu")
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), kw, str(tmp_path)), nprocs=2, join=True)
    w0 = torch.load(tmp_path / "rank0.pt")
    w1 = torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    st = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert st["world_size"] == 2 and len(st["rng"]) == 2 and st["step"] == 3
    init = train_mod.DSANet(train_mod.DSANetConfig.tiny(**SMALL)).state_dict()
    assert any(not torch.equal(init[k], w0[k]) for k in w0)          # it did train
    assert (tmp_path / "ddp" / "model.safetensors").exists()


def test_config_file_round_trip_and_flag_override(shards, tmp_path):
    cfg = cfg_for(shards, tmp_path / "c")
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(dataclasses.asdict(cfg)))
    back = read_config_file(path)
    assert back["model"] == SMALL and back["lr"] == 1e-3 and back["shards"] == [str(shards[0])]
    runner = CliRunner()
    res = runner.invoke(main, ["--config", str(path), "--steps", "1", "--out", str(tmp_path / "c2"),
                               "--no-progress"])
    assert res.exit_code == 0, res.output
    saved = read_config_file(tmp_path / "c2" / "train.toml")
    assert saved["steps"] == 1 and saved["lr"] == 1e-3 and saved["model"]["width"] == 4
    bad = tmp_path / "bad.toml"
    bad.write_text("nonsense_key = 3\n")
    res = runner.invoke(main, ["--config", str(bad), "--shards", str(shards[0])])
    assert res.exit_code == 1 and "unknown setting" in res.output


@pytest.mark.parametrize("args,expect", [
    ([], "no shards"),
    (["--shards", "/nonexistent/x.h5"], "no such file"),
    (["--shards", "JUNK"], "not a readable HDF5"),
    (["--shards", "TRAIN", "--windows", "73"], "not in any shard"),
    (["--shards", "TRAIN", "--crop", "512"], "smaller than the 512px crop"),
])
def test_bad_input_one_line_error(shards, tmp_path, args, expect):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00" * 64)
    args = [{"TRAIN": str(shards[0]), "JUNK": str(junk)}.get(a, a) for a in args]
    res = CliRunner().invoke(main, args + ["--out", str(tmp_path / "o"), "--tiny", "--no-progress"])
    assert res.exit_code == 1
    assert expect in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_shell_glob_expansion_and_lr_schedule(shards):
    from blurforge.cliutil import spread_multi
    assert spread_multi(["--shards", "a", "b", "--val-shards", "c", "d", "--out", "x"],
                        ("--shards", "--val-shards")) == \
        ["--shards", "a", "--shards", "b", "--val-shards", "c", "--val-shards", "d", "--out", "x"]
    # no warm-up: the schedule is torch's own cosine annealing, step for step
    c = TrainConfig(lr=2e-4, lr_min=1e-6)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=c.lr)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100, eta_min=c.lr_min)
    for s in range(101):
        assert train_mod.lr_factor(s, c, 100) * c.lr == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9), s
        opt.step()
        ref.step()
    # warm-up: linear to the full lr over 10 steps, then the cosine over the remaining 100
    w = TrainConfig(lr=1e-3, lr_min=0.0, warmup=10)
    assert [train_mod.lr_factor(s, w, 110) for s in (0, 4, 9, 10)] == pytest.approx([0.1, 0.5, 1.0, 1.0])
    assert train_mod.lr_factor(60, w, 110) == pytest.approx(0.5)
    assert train_mod.lr_factor(110, w, 110) == 0.0 and train_mod.lr_factor(500, w, 110) == 0.0


def test_cli_settings_sources(shards, tmp_path):
    """Folders are searched recursively; a --config file feeds the defaults and flags win; a wrong
    value in the file is one line naming the setting."""
    nested = tmp_path / "data" / "a" / "b"
    nested.mkdir(parents=True)
    (nested / "train.h5").write_bytes(Path(shards[0]).read_bytes())
    conf = tmp_path / "c.toml"
    conf.write_text(tomli_w.dumps({"lr": 5e-4, "crop": 32, "batch": 2, "steps": 3, "workers": 0, "tiny": True,
                                   "tensorboard": False, "model": {"width": 4}}))
    out = tmp_path / "o"
    res = CliRunner().invoke(main, ["--config", str(conf), "--shards", str(tmp_path / "data"), "--steps", "2",
                                    "--out", str(out), "--no-progress", "--model-opt", "blocks=1"])
    assert res.exit_code == 0, res.output
    saved = read_config_file(out / "train.toml")
    assert saved["shards"] == [str(tmp_path / "data")]       # as given: a re-run searches the folder again
    assert (saved["steps"], saved["lr"], saved["crop"]) == (2, 5e-4, 32)
    assert (saved["model"]["width"], saved["model"]["blocks"], saved["model"]["kernel_size"]) == (4, 1, 3)
    st = load_checkpoint(out / "last.pt")
    assert st["step"] == 2 and st["shards"] == ["train.h5"]
    conf.write_text('lr = "fast"\n')
    res = CliRunner().invoke(main, ["--config", str(conf), "--shards", str(shards[0]), "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "lr" in res.output and "fast" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_export_best_writes_the_best_validation_weights(shards, tmp_path):
    """--export best: model.safetensors holds best.pt's weights (the step with the best validation
    PSNR, read back from metrics.jsonl), not the last step's; without validation it is an error."""
    from safetensors.torch import load_file

    run(cfg_for(shards, tmp_path / "b", steps=8, val_every=2, lr=3e-2, export="best"))
    recs = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    vals = {r["step"]: r["psnr"] for r in recs if r["kind"] == "val"}
    best_step = max(vals, key=vals.get)
    best = load_checkpoint(tmp_path / "b" / "best.pt")
    assert best["step"] == best_step
    exported = load_file(str(tmp_path / "b" / "model.safetensors"))
    for k, v in best["model"].items():
        assert torch.equal(exported[k], v), k
    last = load_checkpoint(tmp_path / "b" / "last.pt")
    assert best_step != 8       # lr 3e-2 makes validation wander: the last step is not the best
    assert any(not torch.equal(exported[k], v) for k, v in last["model"].items())
    with pytest.raises(TrainingError, match="--export best"):
        run(cfg_for(shards, tmp_path / "n", val_shards=[], export="best"))
