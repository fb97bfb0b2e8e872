"""Opt-in downloads of the public corpora: fetch an archive, verify it, extract it, delete it.

Nothing here runs unless a loader is called with ``download=True``. Each step fails with its
own error, because each has its own fix: the network (:class:`ConnectionError`: retry, or copy
the data from a connected machine), an answer that is not the archive (an HTTP error or a short
transfer: :class:`ConnectionError`; a checksum that differs from the published one:
:class:`ValueError`, and the file is deleted), and the local disk (:class:`OSError` that says
so: a folder that cannot be written or a full disk, which no retry of the network would fix).
Folders are created as needed; the archive is written as ``<name>.partial`` and renamed only
once it is whole, so an interrupted download never passes for a finished one.
"""

from __future__ import annotations

import hashlib
import http.client
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = ["Archive", "download"]

BLOCK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """A published archive: what it is (for messages), where it is, its SHA-256 if published."""

    what: str
    url: str
    sha256: str | None = None

    @property
    def filename(self) -> str:
        return Path(urlparse(self.url).path).name


def download(archive: Archive, into: Path, *, timeout: float = 60.0,
             opener: Callable[..., Any] = urllib.request.urlopen) -> None:
    """Fetch ``archive``, check it, extract it into ``into`` (created) and delete it."""
    into = Path(into)
    try:
        into.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _local(archive, into, err) from None
    path = into / archive.filename
    _fetch(archive, path, timeout, opener)
    _verify(archive, path)
    _extract(archive, path, into)
    path.unlink()


def _network(archive: Archive, err: BaseException) -> ConnectionError:
    if isinstance(err, urllib.error.HTTPError):
        why = f"the server answered {err.code} {err.reason}"
    else:
        why = str(getattr(err, "reason", None) or err or type(err).__name__)
    return ConnectionError(f"downloading {archive.what} from {archive.url} failed ({why}). "
                           "Check the network and retry, or download it on a connected machine "
                           "and extract it here.")


def _local(archive: Archive, path: Path, err: OSError) -> OSError:
    return OSError(f"saving {archive.what} to {path} failed ({err}): a local problem, not the "
                   "network. Check that the folder can be written and the disk has room, or "
                   "pass root= (or set $SPEECHUL_DATA) to a folder that can.")


def _fetch(archive: Archive, path: Path, timeout: float, opener: Callable[..., Any]) -> None:
    """Stream the URL into ``<path>.partial``; rename it to ``path`` once every byte is in."""
    partial = path.with_name(path.name + ".partial")
    try:
        response = opener(archive.url, timeout=timeout)
    except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, refused...
        raise _network(archive, err) from None
    with response:
        length = response.headers.get("Content-Length")
        received = _copy(archive, response, partial)
    if length is not None and received != int(length):
        partial.unlink()
        raise ConnectionError(f"downloading {archive.what} from {archive.url} was cut short: "
                              f"{received} of {length} bytes arrived. Retry.")
    partial.replace(path)


def _copy(archive: Archive, response: Any, partial: Path) -> int:
    """The response's bytes into ``partial``; network and disk errors told apart."""
    try:
        out = open(partial, "wb")  # noqa: SIM115 - closed below, errors split by their source
    except OSError as err:
        raise _local(archive, partial, err) from None
    received = 0
    with out:
        while True:
            try:
                block = response.read(BLOCK)
            except (OSError, http.client.HTTPException) as err:
                raise _network(archive, err) from None
            if not block:
                return received
            try:
                out.write(block)
            except OSError as err:
                raise _local(archive, partial, err) from None
            received += len(block)


def _verify(archive: Archive, path: Path) -> None:
    """Compare the archive's SHA-256 with the published one; a mismatch deletes the file."""
    if archive.sha256 is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    if digest.hexdigest() != archive.sha256:
        path.unlink()
        raise ValueError(f"the downloaded {archive.what} archive ({archive.url}) has SHA-256 "
                         f"{digest.hexdigest()}, not the published {archive.sha256}: it is "
                         "damaged or was changed. It was deleted; download it again.")


def _extract(archive: Archive, path: Path, into: Path) -> None:
    """Unpack a tar archive into ``into``; members that would land outside it are refused."""
    try:
        with tarfile.open(path) as tar:
            tar.extractall(into, filter="data")
    except tarfile.ReadError as err:
        raise ValueError(f"the downloaded {archive.what} archive {path} is not a readable tar "
                         f"file ({err}); delete it and download again") from None
    except tarfile.FilterError as err:
        raise ValueError(f"the {archive.what} archive {path} holds a member that would be "
                         f"written outside {into} ({err}); it was not extracted") from None
