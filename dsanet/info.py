"""``dsanet-info``: parameter count and size of a DSANet configuration, per part.

    dsanet-info                      # paper default
    dsanet-info --tiny               # the CPU test / demo network
    dsanet-info --ablation 2Ed       # Table 3 rows: 1Ed, 2Ed, 3Ed, DSANet
    dsanet-info --all                # every ablation and tiny, one line each
    dsanet-info width=16 blocks=2    # key=value overrides of DSANetConfig (or -c width=16 -c blocks=2)
    dsanet-info --json               # machine-readable
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

PART_NAMES = {"encoders": "encoders (down conv + res blocks)", "fusion": "fusion (SAM features -> stage 1)",
              "convlstm": "ConvLSTM (bottleneck)", "decoders": "decoders (res blocks + up conv)",
              "sam": "SAM / image conv"}


def parse_overrides(items, fields) -> dict:
    """``["width=16", "sam=false"]`` -> typed dict, following the dataclass fields' default types."""
    out = {}
    for it in items:
        if "=" not in it:
            raise ValueError(f"expected key=value, got {it!r}")
        key, val = it.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in fields:
            raise ValueError(f"unknown key {key!r} (valid: {', '.join(fields)})")
        kind = type(fields[key])
        v = val.strip()
        if kind is bool:
            if v.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(f"{key}: expected a boolean, got {val!r}")
            out[key] = v.lower() in ("1", "true", "yes", "on")
        elif kind is int:
            out[key] = int(v)
        elif kind is float:
            out[key] = float(v)
        else:
            out[key] = v
    return out


def describe(cfg) -> dict:
    from .model import DSANet
    net = DSANet(cfg)
    table = net.parameter_table()
    total = net.count_parameters()
    return {"config": dataclasses.asdict(cfg), "parameters": total, "mb_fp32": total * 4 / 1e6,
            "parts": table, "size_multiple": cfg.size_multiple}


def main(argv=None) -> int:
    from .model import DSANetConfig
    ap = argparse.ArgumentParser(prog="dsanet-info", description="Parameter count of a DSANet configuration.")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="DSANetConfig field overrides")
    ap.add_argument("-c", "--config", action="append", default=[], metavar="key=value",
                    help="a DSANetConfig override (repeatable; same as the positional form)")
    ap.add_argument("--tiny", action="store_true", help="start from DSANetConfig.tiny()")
    ap.add_argument("--ablation", choices=DSANetConfig.ABLATIONS, help="start from a Table 3 ablation")
    ap.add_argument("--all", action="store_true", help="one line per ablation and tiny")
    ap.add_argument("--json", action="store_true", help="print JSON")
    a = ap.parse_args(argv)
    fields = {f.name: getattr(DSANetConfig(), f.name) for f in dataclasses.fields(DSANetConfig)}
    try:
        over = parse_overrides(a.config + a.overrides, fields)
        if a.all:
            cfgs = {n: DSANetConfig.ablation(n, **over) for n in DSANetConfig.ABLATIONS}
            cfgs["tiny"] = DSANetConfig.tiny(**over)
        else:
            if a.tiny and a.ablation:
                abl = DSANetConfig.ablation(a.ablation)
                cfg = DSANetConfig.tiny(**{"stages": abl.stages, "sam": abl.sam, **over})
            elif a.tiny:
                cfg = DSANetConfig.tiny(**over)
            elif a.ablation:
                cfg = DSANetConfig.ablation(a.ablation, **over)
            else:
                cfg = DSANetConfig(**over)
            cfgs = {"config": cfg}
    except (ValueError, TypeError) as e:
        print(f"dsanet-info: {e}", file=sys.stderr)
        return 2

    infos = {name: describe(c) for name, c in cfgs.items()}
    if a.json:
        print(json.dumps(infos if a.all else infos["config"], indent=2))
        return 0
    if a.all:
        print(f"{'model':<8} {'parameters':>12} {'MB fp32':>9}")
        for name, info in infos.items():
            print(f"{name:<8} {info['parameters']:>12,} {info['mb_fp32']:>9.2f}")
        return 0
    info = infos["config"]
    c = info["config"]
    print("DSANet " + " ".join(f"{k}={v}" for k, v in c.items()))
    print(f"input padded to a multiple of {info['size_multiple']}")
    print(f"{'part':<36} {'parameters':>12} {'MB fp32':>9} {'share':>7}")
    for part, n in info["parts"].items():
        share = n / info["parameters"] if info["parameters"] else 0.0
        print(f"{PART_NAMES.get(part, part):<36} {n:>12,} {n * 4 / 1e6:>9.3f} {share:>6.1%}")
    print(f"{'total':<36} {info['parameters']:>12,} {info['mb_fp32']:>9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
