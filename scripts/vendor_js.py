"""The book's JavaScript, served from the book itself so pages work offline.

By default the rendered pages load three libraries from public CDNs: MathJax (the equations),
require.js and ``@jupyter-widgets/html-manager`` (which draws the saved ipywidgets). A student
reading the book from a laptop without network, or behind a firewall, would then see raw LaTeX
and empty widget boxes. This script fetches pinned versions of the three packages from the npm
registry (a plain HTTPS download: no node or npm needed), checks each tarball against its
published SHA-512 integrity, and unpacks the files the pages need into ``_vendor/``, which
``_config.yml`` serves as static files (``html_static_path``) and points MathJax and myst-nb at.

Tarballs are cached under ``~/.cache/speechul/npm`` (``$XDG_CACHE_HOME``), so a clean clone
unpacks them again without a download. ``make book`` and ``make test`` run it; it is idempotent.

Usage::

    python scripts/vendor_js.py          # fetch (if needed) and unpack into _vendor/
    python scripts/vendor_js.py --check  # exit 1 unless _vendor/ holds exactly these versions
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "_vendor"
REGISTRY = "https://registry.npmjs.org"
FONT_SUFFIXES = (".woff2", ".woff", ".ttf", ".eot", ".svg")


@dataclass(frozen=True)
class Package:
    """One npm package: which files of its tarball go where under ``_vendor/``."""

    name: str
    version: str
    integrity: str        # npm's "sha512-<base64>" of the tarball
    source: str           # folder inside the tarball (after "package/")
    target: str           # folder under _vendor/
    keep: tuple[str, ...]  # path prefixes (relative to source) or suffixes (".woff2") to copy

    @property
    def url(self) -> str:
        base = self.name.rsplit("/", 1)[-1]
        return f"{REGISTRY}/{self.name}/-/{base}-{self.version}.tgz"

    def wanted(self, relative: str) -> bool:
        return any(relative.startswith(k) or (k.startswith(".") and relative.endswith(k))
                   for k in self.keep)


# ipywidgets 8 saves widget state that html-manager 1.x draws (controls 2.0, base 2.0, output 1.0).
PACKAGES = (
    Package("@jupyter-widgets/html-manager", "1.0.15",
            "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
            "dist", "html-manager", ("embed-amd.js", *FONT_SUFFIXES)),
    Package("requirejs", "2.3.8",
            "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
            "", "requirejs", ("require.js",)),
    # The single-file tex-mml-chtml bundle plus what it loads on demand (fonts, TeX extensions,
    # the accessibility menu and its speech engine).
    Package("mathjax", "3.2.2",
            "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
            "es5", "mathjax", ("tex-mml-chtml.js", "input/", "output/", "a11y/", "ui/",
                               "sre/", "adaptors/", "core.js", "startup.js")),
)


# The widget manager finds its icon fonts next to its AMD module's URL, which require.js derives
# from the module id relative to the page ("book/@jupyter-widgets/html-manager/dist/x.woff2").
# This script, loaded between require.js and embed-amd.js, points that id at the served folder.
PATHS_JS = """// Written by scripts/vendor_js.py: the widget manager's fonts, served by the book.
(function () {
  var here = document.currentScript.src.replace(/\\/[^\\/]*$/, "");
  require.config({paths: {"@jupyter-widgets/html-manager/dist": here}});
})();
"""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "speechul" / "npm"


def _verified(package: Package, data: bytes) -> bytes:
    algo, _, expected = package.integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algo, data).digest()).decode()
    if digest != expected:
        raise RuntimeError(f"{package.name}@{package.version}: the tarball's {algo} does not "
                           f"match the pinned integrity (corrupt download or cache)")
    return data


def tarball(package: Package) -> bytes:
    """The package's tarball, verified; downloaded once into the cache."""
    cached = cache_dir() / f"{package.name.replace('/', '__')}-{package.version}.tgz"
    if cached.exists():
        try:
            return _verified(package, cached.read_bytes())
        except RuntimeError:
            cached.unlink()  # a truncated earlier download: fetch again
    try:
        with urllib.request.urlopen(package.url, timeout=120) as response:
            data = _verified(package, response.read())
    except OSError as err:
        raise SystemExit(f"could not download {package.url} ({err}). The book's math and "
                         f"widgets are served from _vendor/; run this once online.") from err
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(cached)
    return data


def unpack(package: Package, data: bytes, dest: Path) -> int:
    """Copy the wanted files of ``data`` into ``dest``; returns how many."""
    prefix = "package/" + (package.source + "/" if package.source else "")
    count = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            relative = member.name.removeprefix(prefix)
            if not member.isfile() or relative == member.name or not package.wanted(relative):
                continue
            if ".." in Path(relative).parts:
                raise RuntimeError(f"{package.name}: unsafe path in tarball: {member.name}")
            out = dest / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(tar.extractfile(member).read())
            count += 1
    if not count:
        raise RuntimeError(f"{package.name}: none of {package.keep} found in the tarball")
    return count


def manifest() -> dict[str, str]:
    """What ``_vendor/versions.json`` records: the packages' versions and the paths script."""
    digest = hashlib.sha256(PATHS_JS.encode()).hexdigest()[:12]
    return {**{p.name: p.version for p in PACKAGES}, "paths.js": digest}


def is_current(vendor: Path = VENDOR) -> bool:
    stamp = vendor / "versions.json"
    return stamp.exists() and json.loads(stamp.read_text()) == manifest()


def vendor(target: Path = VENDOR) -> Path:
    """Fill ``target`` with the pinned packages unless it already holds them."""
    if is_current(target):
        return target
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    for package in PACKAGES:
        n = unpack(package, tarball(package), staging / package.target)
        print(f"{package.name}@{package.version}: {n} files -> {target.name}/{package.target}")
    (staging / "html-manager" / "paths.js").write_text(PATHS_JS)
    (staging / "versions.json").write_text(json.dumps(manifest(), indent=1) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check _vendor/ is current")
    args = parser.parse_args(argv)
    if args.check:
        ok = is_current()
        print("_vendor/ is current" if ok else "_vendor/ is missing or stale: "
              "run python scripts/vendor_js.py")
        return 0 if ok else 1
    vendor()
    return 0


if __name__ == "__main__":
    sys.exit(main())
