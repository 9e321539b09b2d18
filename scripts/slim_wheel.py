"""Rewrite a wheel without some of its files, LZMA-compressed, so the GPU bundle fits what a call can carry.

    python scripts/slim_wheel.py SRC.whl DST.whl [--drop GLOB ...]

Why: the GPU machine takes at most 64 MiB per call (working tree included), and
sapien's wheel alone is 51 MB. Most of it is code f1 never runs (the ray
tracer's denoiser, the stereo-depth sensor's IR patterns, C++ headers, macOS
libraries), so those files are dropped, with their rows in RECORD. Every kept
file is stored byte for byte; only the zip compression changes (deflate ->
LZMA, which Python's zipfile and so pip read), so RECORD's hashes stay right.
The result keeps the wheel's file name: pip installs it as that version.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import io
import sys
import zipfile


def slim(src: str, dst: str, drop: list[str]) -> tuple[int, int]:
    """-> (files dropped, files kept)."""
    dropped = kept = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_LZMA) as zout:
        names = [info.filename for info in zin.infolist()]
        gone = {n for n in names if any(fnmatch.fnmatch(n, pattern) for pattern in drop)}
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        for info in zin.infolist():
            if info.filename in gone:
                dropped += 1
                continue
            data = zin.read(info)
            if info.filename == record:  # the installed-files list must not name what is gone
                rows = [row for row in csv.reader(io.StringIO(data.decode())) if row and row[0] not in gone]
                out = io.StringIO()
                csv.writer(out, lineterminator="\n").writerows(rows)
                data = out.getvalue().encode()
            info.compress_type = zipfile.ZIP_LZMA
            zout.writestr(info, data)  # keeps the name, time stamp and permission bits
            kept += 1
    return dropped, kept


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--drop", action="append", default=[], help="glob of archive paths to leave out")
    args = parser.parse_args(argv)
    dropped, kept = slim(args.src, args.dst, args.drop)
    print(f"{args.dst}: kept {kept} files, dropped {dropped}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
