"""Disk use of a virtualenv, in total and per installed distribution (what `du` counts).

Usage: python benchmarks/core_install_size.py VENV [--json]

Per distribution, the files its RECORD lists (bytecode that pip compiled included), in
allocated blocks as `du` counts them; "python + venv" is everything no RECORD claims (the
interpreter links, activate scripts, bytecode written later). Used for
benchmarks/results/core-install/.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from pathlib import Path

MIB = 1024 * 1024


def allocated(path: Path) -> int:
    """Bytes on disk, as `du` counts them (not the apparent size)."""
    return path.lstat().st_blocks * 512


def sizes(venv: Path) -> dict[str, object]:
    site = next((venv / "lib").glob("python3*/site-packages"))
    claimed: set[Path] = set()
    per_dist: dict[str, int] = {}
    for dist in metadata.distributions(path=[str(site)]):
        files = {(site / f).resolve() for f in dist.files or []}
        files = {f for f in files if f.is_file() and f not in claimed}
        claimed |= files
        per_dist[dist.metadata["Name"]] = per_dist.get(dist.metadata["Name"], 0) + sum(map(allocated, files))
    everything = [p for p in venv.rglob("*") if not p.is_dir() or p.is_symlink()]
    total = sum(allocated(p) for p in everything) + sum(allocated(p) for p in venv.rglob("*") if p.is_dir() and not p.is_symlink())
    rest = total - sum(per_dist.values())
    ordered = dict(sorted(per_dist.items(), key=lambda kv: -kv[1]))
    return {
        "venv": str(venv),
        "total_mib": round(total / MIB, 1),
        "distributions": {name: round(size / MIB, 1) for name, size in ordered.items()},
        "python + venv (unclaimed)": round(rest / MIB, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venv", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = sizes(args.venv.resolve())
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['venv']}: {result['total_mib']} MiB")
    for name, mib in result["distributions"].items():
        print(f"  {mib:7.1f}  {name}")
    print(f"  {result['python + venv (unclaimed)']:7.1f}  python + venv (unclaimed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
