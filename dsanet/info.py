"""``dsanet-info``: parameter count and size of a DSANet configuration, per part.

    dsanet-info                      # paper default
    dsanet-info --tiny               # the CPU test / demo network
    dsanet-info --ablation 2Ed       # Table 3 rows: 1Ed, 2Ed, 3Ed, DSANet
    dsanet-info --all                # every ablation and tiny, one line each
    dsanet-info width=16 blocks=2    # key=value overrides of DSANetConfig (or -c width=16 -c blocks=2)

Click command; the counts come from ``DSANet.parameter_table``.
    dsanet-info --json               # machine-readable
"""
from __future__ import annotations

import dataclasses
import json

import click

from blurforge.cliutil import CONTEXT, friendly
from blurforge.errors import BlurforgeError

from .model import DSANet, DSANetConfig

PART_NAMES = {"encoders": "encoders (down conv + res blocks)", "fusion": "fusion (SAM features -> stage 1)",
              "convlstm": "ConvLSTM (bottleneck)", "decoders": "decoders (res blocks + up conv)",
              "sam": "SAM / image conv"}


def parse_overrides(items) -> dict:
    """``["width=16", "sam=false"]`` -> dict typed as the DSANetConfig field defaults (click's own
    conversions: ``true/false/yes/no/1/0`` for booleans)."""
    defaults = dataclasses.asdict(DSANetConfig())
    out = {}
    for it in items:
        key, sep, val = it.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise BlurforgeError(f"expected key=value, got {it!r}")
        if key not in defaults:
            raise BlurforgeError(f"unknown key {key!r} (valid: {', '.join(defaults)})")
        kind = click.types.convert_type(None, defaults[key])
        try:
            out[key] = kind.convert(val.strip(), None, None)
        except click.BadParameter as e:
            raise BlurforgeError(f"{key}: {e.format_message()}") from None
    return out


def describe(cfg: DSANetConfig) -> dict:
    net = DSANet(cfg)
    total = net.count_parameters()
    return {"config": dataclasses.asdict(cfg), "parameters": total, "mb_fp32": total * 4 / 1e6,
            "parts": net.parameter_table(), "size_multiple": cfg.size_multiple}


def configs(over: dict, tiny: bool, ablation: str | None, every: bool) -> dict:
    """The configurations asked for: ``{"config": cfg}``, or every ablation plus tiny."""
    try:
        if every:
            return {**{n: DSANetConfig.ablation(n, **over) for n in DSANetConfig.ABLATIONS},
                    "tiny": DSANetConfig.tiny(**over)}
        if tiny and ablation:
            abl = DSANetConfig.ablation(ablation)
            return {"config": DSANetConfig.tiny(**{"stages": abl.stages, "sam": abl.sam, **over})}
        if tiny:
            return {"config": DSANetConfig.tiny(**over)}
        if ablation:
            return {"config": DSANetConfig.ablation(ablation, **over)}
        return {"config": DSANetConfig(**over)}
    except (ValueError, TypeError) as e:
        raise BlurforgeError(str(e)) from None


def table(info: dict) -> str:
    c = info["config"]
    lines = ["DSANet " + " ".join(f"{k}={v}" for k, v in c.items()),
             f"input padded to a multiple of {info['size_multiple']}",
             f"{'part':<36} {'parameters':>12} {'MB fp32':>9} {'share':>7}"]
    for part, n in info["parts"].items():
        share = n / info["parameters"] if info["parameters"] else 0.0
        lines.append(f"{PART_NAMES.get(part, part):<36} {n:>12,} {n * 4 / 1e6:>9.3f} {share:>6.1%}")
    lines.append(f"{'total':<36} {info['parameters']:>12,} {info['mb_fp32']:>9.3f}")
    return "\n".join(lines)


@click.command(context_settings=CONTEXT)
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("-c", "--config", "more", multiple=True, metavar="KEY=VALUE",
              help="A DSANetConfig override (repeatable; same as the positional form).")
@click.option("--tiny", is_flag=True, help="Start from DSANetConfig.tiny().")
@click.option("--ablation", type=click.Choice(DSANetConfig.ABLATIONS, case_sensitive=False),
              help="Start from a Table 3 ablation.")
@click.option("--all", "every", is_flag=True, help="One line per ablation and tiny.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def main(overrides, more, tiny, ablation, every, as_json):
    """Parameter count and size of a DSANet configuration, per part.

    \b
    Examples:
      dsanet-info                      # paper default (8,157,123 parameters)
      dsanet-info --tiny               # the CPU test / demo network
      dsanet-info --ablation 2Ed       # Table 3 rows: 1Ed, 2Ed, 3Ed, DSANet
      dsanet-info --all                # every ablation and tiny, one line each
      dsanet-info width=16 blocks=2    # KEY=VALUE overrides of DSANetConfig fields
      dsanet-info --json               # machine-readable
    """
    infos = {name: describe(c) for name, c in configs(parse_overrides(more + overrides), tiny, ablation,
                                                       every).items()}
    if as_json:
        click.echo(json.dumps(infos if every else infos["config"], indent=2))
    elif every:
        click.echo(f"{'model':<8} {'parameters':>12} {'MB fp32':>9}")
        for name, info in infos.items():
            click.echo(f"{name:<8} {info['parameters']:>12,} {info['mb_fp32']:>9.2f}")
    else:
        click.echo(table(infos["config"]))


if __name__ == "__main__":
    main()
