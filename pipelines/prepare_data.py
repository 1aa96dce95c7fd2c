"""Convert a dataset's official release into fewray's Parquet catalog.

Usage::

    python pipelines/prepare_data.py omniglot --source ../shared/data/omniglot --out data/omniglot
    python pipelines/prepare_data.py omniglot --download --source ~/datasets/omniglot --out data/omniglot
"""

from __future__ import annotations

import argparse
import json
import sys

import _bootstrap  # noqa: F401

from fewray.platform.errors import DataError, run_cli


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=["omniglot"], help="which release to convert")
    p.add_argument("--source", required=True, help="directory of the official release files")
    p.add_argument("--out", required=True, help="catalog directory to write")
    p.add_argument("--download", action="store_true", help="download the official release into --source first")
    p.add_argument("--image-size", type=int, default=28, help="output image side in pixels (default 28)")
    args = p.parse_args(argv)
    from pathlib import Path

    from tqdm import tqdm

    from fewray.platform.data import omniglot

    if args.download:
        try:
            omniglot.download(Path(args.source))
        except OSError as exc:
            raise DataError(f"download of Omniglot into {args.source} failed: {exc}") from None
    with tqdm(total=1623, unit="char", desc="omniglot", disable=not sys.stderr.isatty()) as bar:
        info = omniglot.prepare_omniglot(args.source, args.out, args.image_size, progress=bar.update)
    print(json.dumps(info["splits"]))
    print(f"catalog written to {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
