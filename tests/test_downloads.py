"""``download=True`` from an empty cache: folders are created, the archive is checked and
extracted and then deleted; a network failure, a damaged archive, a local disk problem and a
missing file are each reported as what they are.

Nothing leaves this machine: the archives are built here in the real layouts (from the fixture
trees of ``test_datasets``) and served by ``http.server`` on 127.0.0.1.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_datasets import make_librispeech, make_speech_commands

from speechul import datasets, downloads


def _tarball(path: Path, tree: Path, arcname: str, skip: str = "") -> str:
    """Write ``tree`` as a .tar.gz at ``path`` (members under ``arcname``); its SHA-256."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tree, arcname=arcname, filter=lambda m: None if skip and m.name.endswith(skip)
                else m)
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Response(io.BytesIO):
    """What ``urlopen`` returns, for an opener that serves bytes without a network."""

    def __init__(self, body: bytes, length: int | None = None) -> None:
        super().__init__(body)
        self.headers = {} if length is None else {"Content-Length": str(length)}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_data_folder(monkeypatch) -> None:
    """``$SPEECHUL_DATA`` would send every download there instead of the test's folder."""
    monkeypatch.delenv("SPEECHUL_DATA", raising=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL, served folder) of a local HTTP server."""
    folder = tmp_path_factory.mktemp("served")
    handler = functools.partial(_Quiet, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", folder
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def sc_archive(server, tmp_path_factory) -> str:
    """speech_commands_v0.01.tar.gz as published: the words at the archive's top level."""
    tree = make_speech_commands(tmp_path_factory.mktemp("sc-tree"))
    return _tarball(server[1] / "speech_commands_v0.01.tar.gz", tree, ".")


def _serve_sc(monkeypatch, server, sha256: str | None) -> None:
    monkeypatch.setattr(datasets, "SC_URL", server[0] + "/speech_commands_{}.tar.gz")
    monkeypatch.setitem(datasets.SC_SHA256, "v0.01", sha256)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_speech_commands_downloads_into_an_empty_cache(server, sc_archive, monkeypatch, tmp_path):
    _serve_sc(monkeypatch, server, sc_archive)
    cache = tmp_path / "fresh"  # does not exist yet: nothing under it does
    source = datasets.speech_commands(download=True, cache=cache)
    folder = cache / "datasets" / "SpeechCommands" / "speech_commands_v0.01"
    assert (folder / "testing_list.txt").is_file() and len(source.part) > 0
    assert not [f for f in _files(cache) if f.endswith((".tar.gz", ".partial"))], "archive kept"
    again = datasets.speech_commands(cache=cache)  # found now: no download needed
    assert again.key == source.key


def test_a_damaged_archive_is_refused_and_deleted(server, sc_archive, monkeypatch, tmp_path):
    _serve_sc(monkeypatch, server, "0" * 64)
    with pytest.raises(ValueError, match="SHA-256 .* not the published 0000.*deleted"):
        datasets.speech_commands(download=True, cache=tmp_path)
    assert _files(tmp_path) == [], "neither the archive nor any of its files may stay"


def test_a_network_failure_is_a_network_error(monkeypatch, tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(datasets, "SC_URL", f"http://127.0.0.1:{port}/sc_{{}}.tar.gz")
    with pytest.raises(ConnectionError, match="Check the network") as caught:
        datasets.speech_commands(download=True, cache=tmp_path / "fresh")
    assert "No such file" not in str(caught.value)


def test_an_http_error_names_the_answer(server, monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "SC_URL", server[0] + "/nothing_{}.tar.gz")
    with pytest.raises(ConnectionError, match="the server answered 404"):
        datasets.speech_commands(download=True, cache=tmp_path)


def test_a_local_problem_is_not_blamed_on_the_network(server, sc_archive, monkeypatch,
                                                      tmp_path):
    _serve_sc(monkeypatch, server, sc_archive)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.raises(OSError, match="a local problem, not the network") as caught:
        datasets.speech_commands(root=blocked / "data", download=True)
    assert not isinstance(caught.value, ConnectionError)


def test_a_missing_split_list_is_named(server, monkeypatch, tmp_path):
    tree = make_speech_commands(tmp_path / "tree")
    sha = _tarball(server[1] / "sc_partial_v0.01.tar.gz", tree, ".", skip="testing_list.txt")
    monkeypatch.setattr(datasets, "SC_URL", server[0] + "/sc_partial_{}.tar.gz")
    monkeypatch.setitem(datasets.SC_SHA256, "v0.01", sha)
    with pytest.raises(FileNotFoundError, match=r"testing_list\.txt of Speech Commands v0\.01 "
                                                r"not found.*incomplete"):
        datasets.speech_commands(download=True, cache=tmp_path / "c")
    (tree / "testing_list.txt").unlink()  # the same without downloading
    with pytest.raises(FileNotFoundError, match=r"testing_list\.txt .*not found.*incomplete"):
        datasets.speech_commands(root=tmp_path / "tree", download=False)


def test_librispeech_downloads_into_an_empty_cache(server, monkeypatch, tmp_path):
    make_librispeech(tmp_path / "tree", speakers=(19, 26), utterances=4)
    sha = _tarball(server[1] / "train-clean-100.tar.gz", tmp_path / "tree" / "LibriSpeech",
                   "LibriSpeech")
    monkeypatch.setattr(datasets, "LIBRISPEECH_URL", server[0] + "/{}.tar.gz")
    monkeypatch.setitem(datasets.LIBRISPEECH_SHA256, "train-clean-100", sha)
    source = datasets.librispeech(download=True, cache=tmp_path / "fresh", crop_seconds=1.0)
    assert source.names["speaker"] == ("19", "26") and len(source.part) == 8
    assert not list((tmp_path / "fresh" / "datasets").glob("*.tar.gz"))


def test_a_short_transfer_is_refused(tmp_path):
    archive = downloads.Archive("X", "http://example.invalid/x.tar.gz")
    with pytest.raises(ConnectionError, match="cut short: 10 of 100 bytes"):
        downloads.download(archive, tmp_path / "new",
                           opener=lambda url, timeout: _Response(b"0123456789", 100))
    assert _files(tmp_path) == []


def test_an_archive_cannot_write_outside_its_folder(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    archive = downloads.Archive("X", "http://example.invalid/evil.tar.gz")
    with pytest.raises(ValueError, match="outside"):
        downloads.download(archive, tmp_path / "into",
                           opener=lambda url, timeout: _Response(evil.read_bytes()))
    assert not (tmp_path / "outside.txt").exists()
