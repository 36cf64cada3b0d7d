"""Print the project's requirements from pyproject.toml, one per line, for `pip install -r`.

Docker images install dependencies from this list before copying the source, so editing
code does not reinstall them. `--extra gpu --drop onnxruntime` gives the CUDA image's list:
onnxruntime and onnxruntime-gpu share one import name and must not be installed together.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path


def requirement_name(requirement: str) -> str:
    """The normalized distribution name a requirement string starts with."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def requirements(pyproject: Path, extras: list[str], drop: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    dropped = {requirement_name(d) for d in drop}
    out: list[str] = []
    for requirement in wanted:
        if requirement_name(requirement) not in dropped and requirement not in out:
            out.append(requirement)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("--extra", action="append", default=[], help="an optional-dependency group")
    parser.add_argument("--drop", action="append", default=[], help="a distribution to leave out")
    args = parser.parse_args()
    print("\n".join(requirements(args.pyproject, args.extra, args.drop)))


if __name__ == "__main__":
    main()
