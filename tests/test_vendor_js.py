"""The book's JavaScript is pinned, hash-checked and complete (``scripts/vendor_js.py``)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import yaml
from scriptload import load_script

ROOT = Path(__file__).resolve().parents[1]


vendor_js = load_script("vendor_js")


def _tgz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_every_script_the_config_names_is_vendored():
    """_config.yml points MathJax and the widget manager at files that vendor() provides."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    static = ROOT / config["html_static_path"][0]
    assert static == vendor_js.vendor()
    assert vendor_js.is_current()
    wanted = [config["mathjax_path"], *config["nb_ipywidgets_js"]]
    missing = [path for path in wanted if not (static / path).is_file()]
    assert not missing, f"_config.yml names scripts that _vendor/ lacks: {missing}"
    fonts = list((static / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert len(fonts) > 10, "MathJax's fonts were not unpacked"
    assert list((static / "html-manager").glob("*.woff2")), "widget icon fonts were not unpacked"


def test_a_tarball_that_does_not_match_its_pin_is_refused():
    package = vendor_js.PACKAGES[1]
    with pytest.raises(RuntimeError, match="does not match the pinned integrity"):
        vendor_js._verified(package, b"not the tarball")


def test_unpack_copies_only_the_wanted_files(tmp_path):
    package = vendor_js.Package("demo", "1.0.0", "sha512-x", "dist", "demo", ("a.js", ".woff2"))
    data = _tgz({"package/dist/a.js": b"1", "package/dist/f.woff2": b"2",
                 "package/dist/b.js": b"3", "package/README.md": b"4"})
    assert vendor_js.unpack(package, data, tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.js", "f.woff2"]
    nothing = vendor_js.Package("demo", "1.0.0", "sha512-x", "dist", "demo", ("gone.js",))
    with pytest.raises(RuntimeError, match="none of"):
        vendor_js.unpack(nothing, data, tmp_path / "other")


def test_the_npm_url_of_a_scoped_package():
    package = vendor_js.PACKAGES[0]
    assert package.url == ("https://registry.npmjs.org/@jupyter-widgets/html-manager/-/"
                           f"html-manager-{package.version}.tgz")
