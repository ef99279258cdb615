"""Fetching a file over HTTP with its MD5 checked, and unpacking a tar archive without letting
any member out of the folder it is unpacked into.

A file is written next to its destination under a temporary name and renamed only once its
checksum matches, so an interrupted or corrupted download never looks like a finished one.
An archive is checked whole before anything is written: a member with an absolute path, a
``..`` component, or that is a link or a device refuses the archive.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from tasks.errors import TaskError

TIMEOUT_S = 60
_CHUNK = 1 << 20

# progress(file name, bytes so far, total bytes or None)
Progress = Callable[[str, int, int | None], None]


class DownloadError(TaskError):
    """A file that could not be fetched, was fetched with the wrong checksum, or an archive
    that could not be unpacked safely."""


def md5_of(path: Path, *, gunzip: bool = False) -> str:
    """MD5 of a file's bytes (of its decompressed bytes with ``gunzip``)."""
    h = hashlib.md5(usedforsecurity=False)
    with gzip.open(path, "rb") if gunzip else path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(
    urls: tuple[str, ...],
    dest: Path,
    md5: str,
    *,
    content_md5: str | None = None,
    size: int | None = None,
    progress: Progress | None = None,
) -> Path:
    """Download ``dest`` from the first of ``urls`` that serves it with MD5 ``md5`` (or, for
    a gzipped file, whose decompressed bytes have MD5 ``content_md5``).

    Raises:
        DownloadError: naming every URL tried and what went wrong with each.
    """
    part = dest.with_name(f".{dest.name}.part")
    errors = []
    for url in urls:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            errors.append(f"{url}: not an http(s) URL")
            continue
        try:
            found = _get(url, part, dest.name, size, progress)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            part.unlink(missing_ok=True)
            errors.append(f"{url}: {exc}")
            continue
        if found == md5 or (content_md5 and _content_md5(part) == content_md5):
            os.replace(part, dest)
            return dest
        part.unlink(missing_ok=True)
        errors.append(f"{url}: md5 {found}, expected {md5}")
    raise DownloadError(f"could not download {dest.name}: " + "; ".join(errors))


def _get(url: str, part: Path, name: str, size: int | None, progress: Progress | None) -> str:
    """Stream ``url`` into ``part``; its MD5."""
    h = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or size
        done = 0
        with part.open("wb") as fh:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                fh.write(chunk)
                h.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(name, done, total)
    return h.hexdigest()


def _content_md5(path: Path) -> str | None:
    try:
        return md5_of(path, gunzip=True)
    except (OSError, EOFError, gzip.BadGzipFile):
        return None


def unsafe_member(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` must not be extracted, or None when it is a plain file or folder
    whose path stays inside the folder it is unpacked into."""
    name = member.name
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in path.parts or ".." in name.split("\\"):
        return "a '..' component"
    if not (member.isfile() or member.isdir()):
        return "a link or special file"
    return None


def extract_tar(archive: Path, root: Path) -> list[Path]:
    """Unpack ``archive`` (tar, gzipped or not) into ``root``; the files written.

    Every member is checked first: one that is unsafe (:func:`unsafe_member`) refuses the
    whole archive, with nothing written.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            bad = [(m.name, why) for m in members if (why := unsafe_member(m))]
            if bad:
                listed = "; ".join(f"{n!r} has {why}" for n, why in bad[:5])
                raise DownloadError(f"{archive}: refused, members would escape {root}: {listed}")
            written = []
            for m in members:
                target = root.joinpath(*PurePosixPath(m.name).parts)
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(m)
                assert source is not None, m.name
                part = target.with_name(f".{target.name}.part")
                with source, part.open("wb") as out:
                    shutil.copyfileobj(source, out, _CHUNK)
                os.replace(part, target)
                written.append(target)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile) as exc:
        raise DownloadError(f"{archive}: not a readable tar archive ({exc})") from exc
    return written
