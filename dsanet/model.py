"""DSANet: a multi-scale recurrent encoder-decoder with supervised attention (Sensors 2025, 25(6) 1896).

One network with shared weights runs coarse to fine over an image pyramid. At every scale it takes the
blurred image and the up-sampled restoration of the coarser scale, encodes it down to H/8, runs a
ConvLSTM there whose state travels to the next scale, decodes back to full resolution and ends in a
supervised attention module (SAM) that emits that scale's restored image and a gated feature map for
the next scale. ``DSANet(cfg)(blur)`` returns the restored image of every scale, coarse to fine.

Readings of the paper
---------------------
The paper gives the stage layout and channel counts but no kernel sizes, block internals, skip type,
ConvLSTM details, SAM equations or fusion details. Where it is vague, SRN-DeblurNet (Tao et al. 2018,
the network it builds on and whose size it reports, 32.2 MB) and MPRNet's SAM settle it:

1. Scales (eq. 2, Sec. 5 "K"): ``cfg.scales`` = 3 scales, factor 1/2, coarse to fine, one parameter
   set. The blurred pyramid is bilinear x1/2 without antialiasing, which on even sizes is exactly a
   2x2 mean (implemented as ``avg_pool2d``); coarse results and ConvLSTM states go up x2 bilinearly
   (``align_corners=False``).
2. Input per scale (SRN): the blurred image at that scale concatenated with the up-sampled restored
   image of the coarser scale, 6 channels; at the coarsest scale the blurred image twice.
3. Encoder (Sec. 3): three stages 32 -> 64 -> 128 channels. The text puts a stride-2 step in *every*
   stage, the first included ([H,W,3] -> [H/2,W/2,32]), so the bottleneck is at H/8 (SRN's first conv
   has stride 1 and its bottleneck is at H/4). Each stage = one down-sampling conv + ReLU, then residual
   blocks (conv-ReLU-conv + identity skip, no normalisation, Sec. 2.4 / SRN).
   The paper's "four residual blocks" per stage is read as SRN's stage: one conv + 3 residual blocks
   (``cfg.blocks`` = 3). Four residual blocks plus the conv would give 10.3 M parameters (41.2 MB),
   not the 32.2 MB the paper reports; SRN's stage gives SRN's 32.2 MB exactly (see accounting below).
4. Kernels: 5x5 everywhere (SRN), ``cfg.kernel_size``; 3x3 for the ConvLSTM (SRN), ``cfg.lstm_kernel``.
5. Decoder (Sec. 3): mirrors the encoder - residual blocks, then a stride-2 up-sampling (SRN's 4x4
   transposed conv + ReLU) 128 -> 64 -> 32 -> 32, the last one back to full resolution H x W (the
   paper's Decoder3). Encoder-decoder skips are additive (SRN), so they add no parameters: the output
   of decoder i is added to the encoder feature of the same size (H/4: enc2, H/2: enc1; none at H).
6. ConvLSTM (Shi et al. [43], SRN): at the bottleneck, gates from a 3x3 conv over [features, h]
   (128 + 128 -> 4 x 128), a constant forget-gate bias of +1 added inside the sigmoid (TF's LSTM cell
   as SRN uses; survives any re-initialisation), its output h replaces the bottleneck features. Both h
   and the cell state c (the paper's "hidden state h_i") are resized x2 bilinearly to the next scale;
   the coarsest scale starts from zeros.
7. SAM (Sec. 3.1, MPRNet): at full resolution of each scale, ``restored = blurred_s + conv(F)``,
   ``att = sigmoid(conv(restored))``, ``gated = conv(F) * att + F``, all convs ``cfg.kernel_size``.
   ``restored`` is that scale's output and is supervised (deep supervision). The finest scale's gated
   features feed nothing, so they are only computed when asked for (``return_attention=True``); hence
   with ``scales=1`` the SAM's feature and attention convs get no gradient (DDP then needs
   ``find_unused_parameters=True``).
8. Fusion ("concatenates it with the up-sampled features from the previous scale"): the gated features
   of scale s-1 live at scale s-1's full resolution, which is exactly half of scale s, i.e. the size
   of scale s's first-stage features after its stride-2 conv. So the x2 step from scale s-1 to scale s
   is the first stage's own down-sampling: they are concatenated there (32 + 32 channels) and fused
   by a 5x5 conv back to 32 (linear, like MPRNet's concat conv), before the residual blocks. Up-sampling
   them to H x W only to stride back down would be a detour with the same information. At the
   coarsest scale the gated slot is zeros (like the ConvLSTM's zero initial state), so the same
   function runs at every scale.
9. 1Ed / 2Ed / 3Ed (Table 3): 1, 2 or 3 encoder/decoder stages, ConvLSTM at the bottleneck in all
   ("for a fair comparison"), no SAM: the features go through one conv to the image (+ blurred image,
   the same global residual as SAM's) and nothing is fused into the next scale. DSANet = 3Ed + SAM +
   fusion. Only the *order* of the paper's sizes (5.3 < 12.4 < 31.5 < 32.2 MB) is reproduced; the
   paper's 1Ed/2Ed sizes are not consistent with dropping stages from this network.
10. Any input size: replicate-padded (bottom/right) to a multiple of 2^(stages + scales - 1) (32 by
    default), cropped back. The output of the scale k levels below full size is ceil(H / 2^k) x
    ceil(W / 2^k). Replicate padding commutes with the 2x2 mean, so ``dsanet.losses`` builds the
    matching target pyramid exactly.
11. Initialisation (Sec. 5, [40]): Kaiming normal (fan_in, ReLU gain; the true fan-in for transposed
    convs), zero biases. The last conv of every residual branch - the second conv of each residual
    block and the SAM's feature conv (``F + conv(F) * att``) - is scaled by ``cfg.residual_init`` = 0.1
    (as ESRGAN [25], whose normalisation-free blocks the paper adopts), the SAM's image conv
    (``blurred + conv(F)``, after the deepest stack) by its square, and the linear fusion conv gets
    Kaiming's gain 1 instead of sqrt(2). Plain Kaiming on every conv makes the activations explode
    through 2 x 9 unnormalised residual blocks and the scale recurrence (measured at init, 64x64
    input: restored-image std ~1e1 / 1e3 / 1e6 at the three scales); with this start every restored
    image is its blurred input +- ~0.01-0.03, so training starts from the identity, not from noise.
    ``residual_init=1`` gives plain Kaiming.

Parameter accounting (default config, fp32 MB = params x 4 / 1e6)
-----------------------------------------------------------------
SRN-DeblurNet colour + ConvLSTM: 8,061,411 = 32.2 MB. Per stage (5x5): conv + 3 residual blocks =
  enc 4,832 + 153,792 | 51,264 + 614,784 | 204,928 + 2,458,368; ConvLSTM 1,180,160;
  dec 2,458,368 + 131,136 (4x4 deconv) | 614,784 + 32,800 | 153,792; output conv 2,403.
3Ed = SRN + a third up-sampling (32 -> 32 4x4 deconv, +16,416; the first stride-2 step costs nothing)
  = 8,077,827 (32.3 MB); the SRN output conv is our image conv.
DSANet = 3Ed + SAM feature conv (25,632) + SAM attention conv (2,432) + fusion conv (51,232)
  = 3Ed + 79,296 (+0.32 MB, the text's "+0.3 MB"; Table 3's 31.5 -> 32.2 MB says +0.7 MB, which no
  SAM of this shape reaches) = 8,157,123 parameters = 32.6 MB.
The K ablation (``scales`` 1..3) does not change the count; ``dsanet-info`` prints the table per part.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["DSANetConfig", "DSANet", "ResBlock", "ConvLSTMCell", "SupervisedAttention"]


# ----------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------
@dataclass
class DSANetConfig:
    """Every knob of the network; ``DSANetConfig(**dataclasses.asdict(cfg)) == cfg``."""

    width: int = 32            # channels of stage 1; stage i has width * 2**(i-1)
    blocks: int = 3            # residual blocks per encoder / decoder stage (SRN: 3, "four blocks" w/ conv)
    kernel_size: int = 5       # every conv except the ConvLSTM's and the 4x4 transposed convs
    scales: int = 3            # K: pyramid levels, factor 1/2, coarse to fine
    stages: int = 3            # encoder/decoder stages (1Ed / 2Ed / 3Ed), bottleneck at H / 2**stages
    convlstm: bool = True      # ConvLSTM at the bottleneck, state carried across scales
    lstm_kernel: int = 3
    sam: bool = True           # supervised attention + fusion of its gated features into the next scale
    residual_init: float = 0.1  # init scale of residual branches' last conv (squared: the image conv)

    def __post_init__(self):
        for name in ("width", "blocks", "kernel_size", "scales", "stages", "lstm_kernel"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"DSANetConfig.{name} must be an int, got {v!r}")
        if self.width < 1 or self.blocks < 0 or self.scales < 1:
            raise ValueError("DSANetConfig: need width >= 1, blocks >= 0, scales >= 1")
        if not 1 <= self.stages <= 3:
            raise ValueError(f"DSANetConfig.stages must be 1, 2 or 3, got {self.stages}")
        if self.kernel_size % 2 == 0 or self.lstm_kernel % 2 == 0 or self.kernel_size < 1:
            raise ValueError("DSANetConfig: kernel sizes must be odd")
        for name in ("convlstm", "sam"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"DSANetConfig.{name} must be a bool")
        self.residual_init = float(self.residual_init)

    @classmethod
    def tiny(cls, **overrides) -> "DSANetConfig":
        """Small and fast for CPU tests and demos, same topology: width 12, 1 block, 3x3 (0.32 M params)."""
        return cls(**{**dict(width=12, blocks=1, kernel_size=3), **overrides})

    ABLATIONS = ("1Ed", "2Ed", "3Ed", "DSANet")

    @classmethod
    def ablation(cls, name: str, **overrides) -> "DSANetConfig":
        """Table 3 of the paper: "1Ed", "2Ed", "3Ed" (no SAM) or "DSANet"."""
        table = {"1ed": dict(stages=1, sam=False), "2ed": dict(stages=2, sam=False),
                 "3ed": dict(stages=3, sam=False), "dsanet": dict(stages=3, sam=True)}
        key = name.lower()
        if key not in table:
            raise ValueError(f"unknown ablation {name!r}; use one of {', '.join(cls.ABLATIONS)}")
        return cls(**{**table[key], **overrides})

    @property
    def size_multiple(self) -> int:
        """Input sizes are padded to a multiple of this (total down-sampling over scales and stages)."""
        return 2 ** (self.stages + self.scales - 1)


# ----------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------
def conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


class ResBlock(nn.Module):
    """x + conv(relu(conv(x))), no normalisation (SRN / EDSR)."""

    def __init__(self, c: int, k: int):
        super().__init__()
        self.conv1 = conv(c, c, k)
        self.conv2 = conv(c, c, k)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(x)))


class EncoderStage(nn.Module):
    """Stride-2 conv + ReLU: [cin, H, W] -> [cout, H/2, W/2]; optional fusion; residual blocks."""

    def __init__(self, cin: int, cout: int, k: int, blocks: int, fuse: bool = False):
        super().__init__()
        self.down = conv(cin, cout, k, stride=2)
        # fusion of the coarser scale's gated SAM features (DSANet, stage 1 only): [2c] -> [c]
        self.fuse = conv(2 * cout, cout, k) if fuse else None
        self.blocks = nn.Sequential(*[ResBlock(cout, k) for _ in range(blocks)])

    def forward(self, x, extra=None):
        x = F.relu(self.down(x))
        if self.fuse is not None:                                   # coarsest scale: empty memory (zeros)
            x = self.fuse(torch.cat([x, torch.zeros_like(x) if extra is None else extra], dim=1))
        return self.blocks(x)


class DecoderStage(nn.Module):
    """Residual blocks, then 4x4 stride-2 transposed conv + ReLU: [cin, h, w] -> [cout, 2h, 2w]."""

    def __init__(self, cin: int, cout: int, k: int, blocks: int):
        super().__init__()
        self.blocks = nn.Sequential(*[ResBlock(cin, k) for _ in range(blocks)])
        self.up = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)

    def forward(self, x):
        return F.relu(self.up(self.blocks(x)))


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM; gates from one conv over [x, h]; forget bias +1 inside the sigmoid."""

    def __init__(self, c: int, k: int):
        super().__init__()
        self.gates = conv(2 * c, 4 * c, k)

    def forward(self, x, h, c):
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f + 1.0) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class SupervisedAttention(nn.Module):
    """MPRNet's SAM. restored = blurred + conv(F); att = sigmoid(conv(restored)); gated = conv(F)*att + F.

    With ``gate=False`` (the 1Ed/2Ed/3Ed ablations) only the image conv exists.
    """

    def __init__(self, c: int, k: int, gate: bool = True):
        super().__init__()
        self.to_image = conv(c, 3, k)
        self.feat = conv(c, c, k) if gate else None
        self.to_attention = conv(3, c, k) if gate else None

    def forward(self, x, blurred, gate: bool = True):
        restored = blurred + self.to_image(x)                       # [B,3,H,W]
        if self.feat is None or not gate:
            return restored, None, None
        att = torch.sigmoid(self.to_attention(restored))            # [B,c,H,W] in (0, 1)
        return restored, self.feat(x) * att + x, att


# ----------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------
def _down2(x):
    """Bilinear x1/2 (align_corners=False, no antialias) on an even-sized image = 2x2 mean."""
    return F.avg_pool2d(x, 2)


def _up2(x):
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def scale_sizes(h: int, w: int, scales: int) -> list[tuple[int, int]]:
    """Output sizes of each scale, coarse to fine: ceil(h / 2**k) x ceil(w / 2**k)."""
    return [(-(-h // 2 ** k), -(-w // 2 ** k)) for k in range(scales - 1, -1, -1)]


class DSANet(nn.Module):
    """``net(blur)`` -> list of ``cfg.scales`` restored images, coarse to fine, the last full size."""

    def __init__(self, cfg: DSANetConfig | None = None):
        super().__init__()
        cfg = DSANetConfig() if cfg is None else cfg
        self.cfg = cfg
        k, n = cfg.kernel_size, cfg.stages
        ch = [cfg.width * 2 ** i for i in range(n)]                 # 32, 64, 128
        self.encoders = nn.ModuleList(
            EncoderStage(6 if i == 0 else ch[i - 1], ch[i], k, cfg.blocks, fuse=(i == 0 and cfg.sam))
            for i in range(n))
        self.convlstm = ConvLSTMCell(ch[-1], cfg.lstm_kernel) if cfg.convlstm else None
        # decoder i (deepest first): blocks at ch[n-1-i], up to ch[n-2-i]; the last one 32 -> 32 at H x W
        self.decoders = nn.ModuleList(
            DecoderStage(ch[j], ch[max(j - 1, 0)], k, cfg.blocks) for j in range(n - 1, -1, -1))
        self.sam = SupervisedAttention(ch[0], k, gate=cfg.sam)
        self.reset_parameters()

    # -- initialisation ---------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self):
        """Kaiming normal (fan_in), zero biases; residual branches x ``cfg.residual_init`` (docstring, 11)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.ConvTranspose2d):
                # each output pixel sees cin * (k / stride)^2 weights, not cout * k^2 as torch's fan-in
                fan_in = m.in_channels * (m.kernel_size[0] // m.stride[0]) * (m.kernel_size[1] // m.stride[1])
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_in))
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None:
                m.bias.zero_()
        r = self.cfg.residual_init
        for m in self.modules():
            if isinstance(m, ResBlock):
                m.conv2.weight.mul_(r)                              # x + conv2(relu(conv1(x)))
        self.sam.to_image.weight.mul_(r * r)                        # blurred + to_image(F)
        if self.sam.feat is not None:
            self.sam.feat.weight.mul_(r)                            # F + feat(F) * att
        fuse = self.encoders[0].fuse
        if fuse is not None:                                        # linear, half its input un-rectified:
            fuse.weight.mul_(math.sqrt(0.5))                        # Kaiming gain 1 instead of sqrt(2)

    # -- one scale ---------------------------------------------------------------------------------
    def _scale(self, blur, prev, gated, state, need_gate: bool):
        """blur [B,3,h,w]; prev: coarser restored image up-sampled (or blur); gated [B,32,h/2,w/2] or None."""
        x = torch.cat([blur, prev], dim=1)                          # [B,6,h,w]
        skips = []
        for i, enc in enumerate(self.encoders):                     # [B,32,h/2] [B,64,h/4] [B,128,h/8]
            x = enc(x, gated) if i == 0 else enc(x)
            skips.append(x)
        if self.convlstm is not None:
            h, c = state if state is not None else (torch.zeros_like(x), torch.zeros_like(x))
            h, c = self.convlstm(x, h, c)
            x, state = h, (h, c)
        n = len(self.decoders)
        for j, dec in enumerate(self.decoders):                     # [B,64,h/4] [B,32,h/2] [B,32,h]
            x = dec(x)
            if j < n - 1:
                x = x + skips[n - 2 - j]
        restored, gated, att = self.sam(x, blur, gate=need_gate)
        return restored, gated, att, state

    def _padded_pyramid(self, blur):
        H, W = blur.shape[-2:]
        m = self.cfg.size_multiple
        ph, pw = (-H) % m, (-W) % m
        x = F.pad(blur, (0, pw, 0, ph), mode="replicate") if (ph or pw) else blur
        pyramid = [x]
        for _ in range(self.cfg.scales - 1):
            pyramid.append(_down2(pyramid[-1]))
        return pyramid[::-1]

    def pyramid(self, img: torch.Tensor) -> list[torch.Tensor]:
        """The image pyramid the network sees (coarse to fine), cropped to the output sizes."""
        sizes = scale_sizes(img.shape[-2], img.shape[-1], self.cfg.scales)
        return [p[..., :h, :w] for p, (h, w) in zip(self._padded_pyramid(img), sizes)]

    def forward(self, blur: torch.Tensor, return_attention: bool = False):
        """blur: [B,3,H,W] in [0,1]. Returns the list of restored images (coarse to fine); with
        ``return_attention`` also the list of SAM attention maps ([B,32,h,w] each; None without SAM)."""
        cfg = self.cfg
        pyramid = self._padded_pyramid(blur)                        # coarse to fine, padded
        sizes = scale_sizes(blur.shape[-2], blur.shape[-1], cfg.scales)

        outs, atts = [], []
        restored = gated = state = None
        for s, b in enumerate(pyramid):
            last = s == cfg.scales - 1
            if restored is None:
                prev = b
            else:
                prev = _up2(restored)
                if state is not None:
                    state = (_up2(state[0]), _up2(state[1]))
            restored, gated, att, state = self._scale(b, prev, gated, state,
                                                      need_gate=(not last) or return_attention)
            h, w = sizes[s]
            outs.append(restored[..., :h, :w])
            if return_attention:
                atts.append(att[..., :h, :w] if att is not None else None)
        return (outs, atts) if return_attention else outs

    # -- bookkeeping ------------------------------------------------------------------------------
    PARTS = ("encoders", "fusion", "convlstm", "decoders", "sam")

    def parameter_table(self) -> dict[str, int]:
        """Parameters per part: encoders (without fusion), fusion, convlstm, decoders, sam."""
        table = dict.fromkeys(self.PARTS, 0)
        for name, p in self.named_parameters():
            if ".fuse." in name:
                part = "fusion"
            else:
                part = name.split(".")[0]
            table[part] += p.numel()
        return table

    def count_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
