"""Set the release version of every flaxchat package from the one source of truth, the root VERSION file.

    python scripts/bump_version.py            # check: every package agrees with VERSION (exit 1 if not)
    python scripts/bump_version.py 0.2.0      # set an exact version
    python scripts/bump_version.py --part minor

A bump rewrites VERSION, each package's `version`, and every inter-package pin
(`flaxchat-model==0.1.*`: same major.minor, so a patch release never needs a re-pin). Run
`uv lock` afterwards. Standard library only, so it runs under any Python 3.11+.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tokenizer", "model", "train", "infer", "evals", "export")
VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)((?:a|b|rc)\d+)?$")
# A flaxchat requirement inside a TOML string: name, optional extras, then its version specifier.
PIN_RE = re.compile(r'"(flaxchat-[a-z]+(?:\[[a-z0-9,\s-]+\])?)==[^";]*')
PROJECT_VERSION_RE = re.compile(r'^(version\s*=\s*)"[^"]*"', re.MULTILINE)


class VersionError(Exception):
    """A bad version argument or a workspace the script cannot rewrite; the message says what to do."""


def parse_version(text: str) -> tuple[int, int, int, str]:
    m = VERSION_RE.match(text.strip())
    if not m:
        raise VersionError(f"{text.strip()!r} is not a release version: use MAJOR.MINOR.PATCH, e.g. 0.2.0 or 0.2.0rc1")
    return int(m[1]), int(m[2]), int(m[3]), m[4] or ""


def pin(version: str) -> str:
    """The specifier siblings use for `version`: any release of the same major.minor."""
    major, minor, _, _ = parse_version(version)
    return f"=={major}.{minor}.*"


def bumped(current: str, part: str) -> str:
    major, minor, patch, _ = parse_version(current)
    return {"major": f"{major + 1}.0.0", "minor": f"{major}.{minor + 1}.0", "patch": f"{major}.{minor}.{patch + 1}"}[part]


def _release_key(version: str) -> tuple[int, int, int, int, str]:
    major, minor, patch, pre = parse_version(version)
    return major, minor, patch, 0 if pre else 1, pre  # a pre-release sorts before its release


def read_version(root: Path) -> str:
    path = root / "VERSION"
    if not path.is_file():
        raise VersionError(f"{path} is missing: create it with the current version, e.g. `echo 0.1.0 > VERSION`")
    version = path.read_text().strip()
    parse_version(version)
    return version


def _pyproject(root: Path, package: str) -> Path:
    path = root / "packages" / package / "pyproject.toml"
    if not path.is_file():
        raise VersionError(f"{path} is missing: run this from a flaxchat checkout (or pass --root)")
    return path


def mismatches(root: Path, version: str) -> list[str]:
    """Every place where a package's version or an inter-package pin disagrees with `version`."""
    want = pin(version)
    problems = []
    for package in PACKAGES:
        path = _pyproject(root, package)
        project = tomllib.loads(path.read_text())["project"]
        if project.get("version") != version:
            problems.append(f"{path}: version is {project.get('version')!r}, VERSION says {version!r}")
        requirements = list(project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            requirements += extra
        for req in requirements:
            m = re.match(r"(flaxchat-[a-z]+)(\[[^\]]*\])?\s*(.*)", req)
            if m and m[3].split(";")[0].strip() != want:
                problems.append(f"{path}: {req!r} should pin {m[1]}{want}")
    return problems


def rewrite(text: str, version: str) -> str:
    """`text` (a package's pyproject.toml) with its [project] version and flaxchat pins set for `version`."""
    text, n = PROJECT_VERSION_RE.subn(rf'\g<1>"{version}"', text, count=1)
    if n != 1:
        raise VersionError("no `version = \"...\"` line: add one under [project]")
    return PIN_RE.sub(lambda m: f'"{m[1]}{pin(version)}', text)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def set_version(root: Path, version: str) -> list[Path]:
    """Rewrite VERSION and every package for `version`; returns the files written."""
    parse_version(version)
    current = read_version(root)
    if _release_key(version) <= _release_key(current):
        raise VersionError(f"{version} is not newer than the current {current}: versions only go up")
    texts = {}
    for package in PACKAGES:
        path = _pyproject(root, package)
        try:
            texts[path] = rewrite(path.read_text(), version)
        except VersionError as e:
            raise VersionError(f"{path}: {e}") from None
    for path, text in texts.items():  # everything was rewritten in memory before any file changes
        _write_atomic(path, text)
    _write_atomic(root / "VERSION", version + "\n")
    left = mismatches(root, version)
    if left:
        raise VersionError("the rewrite missed some places; fix them by hand:\n  " + "\n  ".join(left))
    return [*texts, root / "VERSION"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version", nargs="?", help="the new version (MAJOR.MINOR.PATCH[a|b|rcN]); omit to check only")
    parser.add_argument("--part", choices=("major", "minor", "patch"), help="bump this part of the current version")
    parser.add_argument("--root", type=Path, default=ROOT, help="the workspace root (default: this checkout)")
    args = parser.parse_args(argv)
    if args.version and args.part:
        parser.error("give a version or --part, not both")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        current = read_version(args.root)
        if not args.version and not args.part:
            problems = mismatches(args.root, current)
            for problem in problems:
                print(problem, file=sys.stderr)
            print(f"flaxchat {current}: " + (f"{len(problems)} mismatch(es) with VERSION: fix them by hand"
                                             if problems else f"all {len(PACKAGES)} packages agree"))
            return 1 if problems else 0
        new = args.version or bumped(current, args.part)
        written = set_version(args.root, new)
    except VersionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    print(f"flaxchat {current} -> {new}. Now run `uv lock`, then see RELEASING.md.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
