"""The `blurforge` command: a thin click layer over the stage modules.

Every failure a user can cause ends in one line on stderr and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import functools
import sys

import click

from . import __version__
from .errors import BlurforgeError


def friendly(fn):
    """Turn BlurforgeError (and a few environment errors) into one-line messages with exit code 1."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BlurforgeError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except OSError as e:
            where = f" ({e.filename})" if getattr(e, "filename", None) else ""
            raise click.ClickException(f"{e.strerror or e}{where}") from None
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="blurforge")
def main():
    """Turn high-speed (960 fps) video into paired sharp/blurred training data for deblurring.

    \b
    Typical use:
      blurforge synth clip.mp4                 # a test clip with known motion (no camera needed)
      blurforge probe clip.mp4 --windows 36,73
      blurforge extract clip.mp4 --windows 36,73   # -> data/clip.h5
      blurforge align                          # aligns every shard under data/
      blurforge inspect data/*.h5 --sheet sheet.png
      dsanet-train --shards data/*.h5
    """


# --- registered commands (each stage module's CLI is added here) ---
