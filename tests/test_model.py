"""DSANet network: sizes, shapes, weight sharing, SAM, autocast / channels_last / compile, overfitting."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from dsanet.losses import MultiScaleLoss
from dsanet.model import DSANet, DSANetConfig, scale_sizes


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small convs gain nothing from a second thread, and lose a lot on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    return DSANet(DSANetConfig.tiny())


def n_params(cfg):
    return DSANet(cfg).count_parameters()


# -------------------------------------------------------------------------------------------- config
def test_default_size_is_srn_plus_sam():
    """The exact accounting of the model docstring, conv by conv (5x5 convs, 4x4 deconvs, 3x3 ConvLSTM)."""
    def c(cin, cout, k):
        return cin * cout * k * k + cout

    res = [2 * c(w, w, 5) for w in (32, 64, 128)]                           # one residual block per stage
    enc = c(6, 32, 5) + 3 * res[0] + c(32, 64, 5) + 3 * res[1] + c(64, 128, 5) + 3 * res[2]
    lstm = c(256, 512, 3)
    dec = 3 * res[2] + c(128, 64, 4) + 3 * res[1] + c(64, 32, 4) + 3 * res[0] + c(32, 32, 4)
    sam = c(32, 3, 5) + c(32, 32, 5) + c(3, 32, 5)                          # image, feature, attention convs
    fusion = c(64, 32, 5)
    assert (enc, lstm, dec, sam, fusion) == (3_487_968, 1_180_160, 3_407_296, 30_467, 51_232)
    net = DSANet(DSANetConfig())
    assert net.parameter_table() == {"encoders": enc, "fusion": fusion, "convlstm": lstm, "decoders": dec,
                                     "sam": sam}
    assert net.count_parameters() == 8_157_123 == enc + fusion + lstm + dec + sam
    # 3Ed: no SAM feature/attention convs and no fusion; SRN-DeblurNet is 3Ed less the third deconv
    assert n_params(DSANetConfig.ablation("3Ed")) == 8_077_827 == 8_157_123 - c(32, 32, 5) - c(3, 32, 5) - fusion
    assert 8_077_827 - c(32, 32, 4) == 8_061_411


def test_dsanet_info_cli():
    from click.testing import CliRunner

    from dsanet.info import main
    res = CliRunner().invoke(main, ["--json"])
    assert res.exit_code == 0 and json.loads(res.output)["parameters"] == 8_157_123
    res = CliRunner().invoke(main, ["--tiny", "--ablation", "2Ed", "width=8", "-c", "blocks=2", "--json"])
    got = json.loads(res.output)
    assert got["config"] == dataclasses.asdict(DSANetConfig(width=8, blocks=2, kernel_size=3, stages=2, sam=False))
    assert got["parameters"] == sum(got["parts"].values())
    res = CliRunner().invoke(main, ["--all"])
    assert res.exit_code == 0 and "8,157,123" in res.output and "8,077,827" in res.output
    for bad in (["wdth=3"], ["sam=maybe"], ["width"]):
        res = CliRunner().invoke(main, bad)
        assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1, res.output


def test_ablation_sizes_rise_in_paper_order():
    sizes = [n_params(DSANetConfig.ablation(name)) for name in ("1Ed", "2Ed", "3Ed", "DSANet")]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4, sizes
    assert DSANetConfig.ablation("DSANet") == DSANetConfig()
    assert DSANetConfig.ablation("2Ed").stages == 2 and not DSANetConfig.ablation("2Ed").sam
    with pytest.raises(ValueError):
        DSANetConfig.ablation("4Ed")


@pytest.mark.parametrize("cfg", [DSANetConfig(), DSANetConfig.tiny(), DSANetConfig.ablation("1Ed"),
                                 DSANetConfig(scales=1, convlstm=False, residual_init=1.0)])
def test_config_round_trips_through_json(cfg):
    d = json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert DSANetConfig(**d) == cfg


@pytest.mark.parametrize("bad", [dict(stages=4), dict(stages=0), dict(scales=0), dict(kernel_size=4),
                                 dict(width=0), dict(sam="yes"), dict(width=3.5)])
def test_bad_configs_are_refused(bad):
    with pytest.raises(ValueError):
        DSANetConfig(**bad)


# ----------------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("scales", [1, 2, 3])
def test_output_shapes_at_every_scale_for_odd_sizes(scales):
    net = DSANet(DSANetConfig.tiny(scales=scales)).eval()
    x = torch.rand(2, 3, 37, 53)
    with torch.no_grad():
        outs = net(x)
    assert len(outs) == scales
    expect = [(37, 53), (19, 27), (10, 14)][:scales][::-1]      # ceil(H / 2**k), coarse to fine
    assert [tuple(o.shape[-2:]) for o in outs] == expect == scale_sizes(37, 53, scales)
    assert all(o.shape[:2] == (2, 3) and o.dtype == torch.float32 and torch.isfinite(o).all() for o in outs)
    assert [tuple(p.shape[-2:]) for p in net.pyramid(x)] == expect


@pytest.mark.parametrize("name", ["1Ed", "2Ed", "3Ed"])
@pytest.mark.parametrize("convlstm", [True, False])
def test_ablations_run_on_odd_sizes(name, convlstm):
    cfg = DSANetConfig.ablation(name, width=8, blocks=1, kernel_size=3, convlstm=convlstm)
    assert cfg.size_multiple == 2 ** (cfg.stages + 2)
    with torch.no_grad():
        outs = DSANet(cfg)(torch.rand(1, 3, 29, 41))
    assert [tuple(o.shape[-2:]) for o in outs] == [(8, 11), (15, 21), (29, 41)]


def test_default_config_runs_on_an_odd_size():
    torch.manual_seed(0)
    net = DSANet().eval()
    x = torch.rand(1, 3, 45, 61)
    with torch.no_grad():
        outs = net(x)
    assert [tuple(o.shape[-2:]) for o in outs] == [(12, 16), (23, 31), (45, 61)]
    # initialised near the identity: each restored image starts close to its blurred input
    for o, b in zip(outs, net.pyramid(x)):
        assert (o - b).abs().mean() < 0.05


def test_padding_is_replicate_and_output_is_cropped(tiny_net):
    net = tiny_net.eval()
    x = torch.rand(1, 3, 37, 53)
    padded = F.pad(x, (0, 64 - 53, 0, 64 - 37), mode="replicate")
    with torch.no_grad():
        a = net(x)
        b = net(padded)
    for oa, ob in zip(a, b):
        h, w = oa.shape[-2:]
        torch.testing.assert_close(oa, ob[..., :h, :w])


def test_gradients_reach_every_parameter(tiny_net):
    net = tiny_net.train()
    net.zero_grad(set_to_none=True)
    x, y = torch.rand(2, 3, 40, 40), torch.rand(2, 3, 40, 40)
    MultiScaleLoss()(net(x), y).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_weights_are_shared_across_scales():
    counts = {s: n_params(DSANetConfig.tiny(scales=s)) for s in (1, 2, 3)}
    assert len(set(counts.values())) == 1, counts
    torch.manual_seed(0)
    net = DSANet(DSANetConfig.tiny())
    calls: dict[str, int] = {}
    watched = {"encoders.0": net.encoders[0], "encoders.2": net.encoders[2], "convlstm": net.convlstm,
               "decoders.0": net.decoders[0], "sam": net.sam, "fuse": net.encoders[0].fuse}
    for key, m in watched.items():
        m.register_forward_hook(lambda m, i, o, key=key: calls.__setitem__(key, calls.get(key, 0) + 1))
    with torch.no_grad():
        net(torch.rand(1, 3, 32, 48))
    assert calls == dict.fromkeys(watched, 3), calls
    # and there is just one copy: no module list per scale
    assert not any(".1." in n and n.startswith("sam") for n, _ in net.named_parameters())


def test_sam_attention_lies_in_open_unit_interval(tiny_net):
    net = tiny_net.eval()
    seen = []
    h = net.sam.register_forward_hook(lambda m, i, o: seen.append(o[2]))
    x = torch.rand(2, 3, 37, 53) * 4 - 2            # out-of-range input: attention must still be a gate
    with torch.no_grad():
        outs, atts = net(x, return_attention=True)
    h.remove()
    assert len(atts) == 3 and len(seen) == 3
    for a, o in zip(atts, outs):
        assert a.shape == (2, net.cfg.width, *o.shape[-2:])
        assert (a > 0).all() and (a < 1).all()
        assert a.std() > 0                                  # a real map, not a constant
    assert all(s is not None and (s > 0).all() and (s < 1).all() for s in seen)
    with torch.no_grad():
        _, atts = DSANet(DSANetConfig.tiny(sam=False))(x, return_attention=True)
    assert atts == [None, None, None]


def test_channels_last_and_bf16_autocast_on_cpu(tiny_net):
    net = tiny_net.eval()
    x = torch.rand(2, 3, 37, 53)
    with torch.no_grad():
        ref = net(x)
        net_cl = net.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs = net_cl(x.contiguous(memory_format=torch.channels_last))
    net.to(memory_format=torch.contiguous_format)
    for o, r in zip(outs, ref):
        assert o.shape == r.shape and torch.isfinite(o).all()
        assert (o.float() - r).abs().max() < 0.1


def test_compiles_without_graph_breaks(tiny_net):
    """fullgraph=True raises on any graph break (data-dependent Python control flow)."""
    net = tiny_net.eval()
    compiled = torch.compile(net, backend="eager", fullgraph=True)
    x = torch.rand(1, 3, 37, 53)
    with torch.no_grad():
        for o, r in zip(compiled(x), net(x)):
            torch.testing.assert_close(o, r)


# ----------------------------------------------------------------------------------------- learning
def _box_blurred_pair(size=64, k=9):
    from skimage import data
    img = torch.from_numpy(data.astronaut()[160:160 + size, 200:200 + size].copy())
    sharp = img.permute(2, 0, 1).float().div(255)[None]
    kernel = torch.zeros(3, 1, k, k)
    kernel[:, :, k // 2, :] = 1.0 / k                              # horizontal box, 9 px
    blur = F.conv2d(F.pad(sharp, (k // 2,) * 4, mode="replicate"), kernel, groups=3)
    return blur, sharp


def test_tiny_network_overfits_one_blurred_pair():
    torch.manual_seed(0)
    blur, sharp = _box_blurred_pair()
    net = DSANet(DSANetConfig.tiny())
    crit = MultiScaleLoss(mu=0.1, fft="l1")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(250):
        loss = crit(net(blur), sharp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5, (losses[0], losses[-1])
    with torch.no_grad():
        out = net(blur)[-1]
    # it really deblurs: 4x lower error than returning the blurred input (> 6 dB)
    assert F.mse_loss(out, sharp) < F.mse_loss(blur, sharp) / 4
