"""Artifact stores behind fsspec URLs (``s3://``, ``gs://``, ``sftp://``…): same layout, same rules.

:func:`open_url` checks a store URL and opens it. A ``file://`` (or ``local://``) URL is
the local folder it names and goes back to :class:`storage.artifacts.ArtifactStore` as a
path, so it takes the local fast path (fsync, rename) and behaves exactly like that path.
Anything else becomes a :class:`FsspecFiles` over the filesystem fsspec picks for it.

Writes never make a partly written object visible under its digest's name:

- On an object store (S3, GCS, Azure, …: :data:`OBJECT_STORES`) one ``pipe_file`` of the
  whole file is one PUT (or a multipart upload that appears only when completed), which is
  atomic: the final key is written directly.
- Elsewhere the bytes go to a temporary name in the same folder, then ``mv`` renames it
  into place. A concurrent writer of the same digest writes the same bytes, so whichever
  rename lands last is harmless; one that finds the file already there of the right size
  counts as done. fsspec offers no fsync: durability is the filesystem's.

Listings are cached by some backends (s3fs, gcsfs); every check drops the cached entries
of the folder first, so a file another node wrote is seen. Credentials come from the
environment or the fsspec configuration; a password in a URL is masked in everything shown.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from storage.engine import mask_secrets
from storage.errors import StorageError
from storage.localfs import SUFFIX, TMP_PREFIX

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = ["OBJECT_STORES", "FsspecFiles", "check_url", "open_url"]

# protocols whose single PUT is atomic and which have no rename; memory:// stands in for
# them in unit tests (it shares nothing between processes)
OBJECT_STORES = frozenset(
    {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "oss", "memory"}
)
_LOCAL = ("file", "local")
# what a filesystem's info() may call the modification time, newest meaning first
_TIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created")


def check_url(url: str) -> str:
    """Return ``url`` if it can name a store root: no ``..`` segment, query, fragment or chain.

    Raises:
        StorageError: It cannot, saying why (the URL shown with any password masked).
    """
    shown = mask_secrets(url)
    scheme, _, rest = url.partition("://")
    if not scheme or not rest:
        raise StorageError(f"artifact store URL {shown!r}: expected SCHEME://PATH")
    if "::" in url:
        raise StorageError(
            f"artifact store URL {shown!r}: chained fsspec URLs (a::b://…) are not supported; "
            "give the storage URL itself"
        )
    if "?" in url or "#" in url:
        raise StorageError(
            f"artifact store URL {shown!r}: a query string or fragment is not allowed; set "
            "backend options in the environment or the fsspec configuration instead"
        )
    if ".." in unquote(rest).replace("\\", "/").split("/"):
        raise StorageError(
            f"artifact store URL {shown!r}: a '..' segment is not allowed; give the root without it"
        )
    return url


def open_url(url: str) -> Path | FsspecFiles:
    """The local folder a ``file://`` URL names, or the fsspec files of any other URL.

    Raises:
        StorageError: The URL is malformed (:func:`check_url`), names no folder or bucket,
            or its protocol is unknown or its fsspec backend is not installed.
    """
    shown = mask_secrets(check_url(url))
    scheme = url.partition("://")[0].lower()
    if scheme in _LOCAL:
        return _local_path(url, shown)
    try:
        from fsspec.core import url_to_fs

        fs, root = url_to_fs(url)
    except ImportError as exc:
        raise StorageError(
            f"artifact store {shown!r}: the fsspec backend for {scheme}:// is not installed "
            f"({mask_secrets(str(exc))}); install it, e.g. `pip install s3fs` or `gcsfs`"
        ) from exc
    except Exception as exc:  # each backend raises its own types (unknown protocol, auth…)
        raise StorageError(
            f"artifact store {shown!r}: fsspec cannot open it ({mask_secrets(str(exc))}); "
            "expected a folder or an fsspec URL such as s3://bucket/prefix or file:///abs/path"
        ) from exc
    return FsspecFiles(fs, root, shown=shown)


def _local_path(url: str, shown: str) -> Path:
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.netloc not in ("", "localhost") or not path.startswith("/"):
        raise StorageError(
            f"artifact store URL {shown!r}: a file URL names an absolute local path, "
            "file:///abs/path (three slashes, no host)"
        )
    return Path(path)


class FsspecFiles:
    """An artifact store's files on an fsspec filesystem (see the module docstring).

    Args:
        fs: The filesystem.
        root: The store's root on it, as fsspec paths go (``bucket/prefix`` on S3).
        shown: How to show the root in messages; by default ``root`` with the protocol.
    """

    def __init__(self, fs: AbstractFileSystem, root: str, *, shown: str | None = None) -> None:
        self.fs, self.root = fs, root.rstrip("/")
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
        if not self.root:
            raise StorageError(
                f"artifact store {shown or sorted(protocols)[0] + '://'!r}: the URL names no "
                "folder or bucket to keep the store in"
            )
        self.shown = (shown or f"{sorted(protocols)[0]}://{self.root}").rstrip("/")
        self.atomic_put = bool(protocols & OBJECT_STORES)

    def location(self, rel: str = "") -> str:
        return f"{self.shown}/{rel}" if rel else self.shown

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def _error(self, what: str, rel: str, exc: Exception) -> StorageError:
        reason = mask_secrets(str(exc) or type(exc).__name__)
        return StorageError(f"cannot {what} artifact {self.location(rel)}: {reason}")

    def _info(self, rel: str) -> dict[str, Any] | None:
        path = self._path(rel)
        self.fs.invalidate_cache(path)
        try:
            info: dict[str, Any] = self.fs.info(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except Exception as exc:  # backends raise their own types; wrapped once, here
            raise self._error("look up", rel, exc) from exc
        return info if info.get("type") == "file" else None

    def size(self, rel: str) -> int | None:
        info = self._info(rel)
        return None if info is None else int(info["size"])

    def read(self, rel: str) -> bytes | None:
        path = self._path(rel)
        self.fs.invalidate_cache(path)
        try:
            blob: bytes = self.fs.cat_file(path)
            return blob
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._error("read", rel, exc) from exc

    def write(self, rel: str, blob: bytes) -> None:
        try:
            if self.atomic_put:
                self.fs.pipe_file(self._path(rel), blob)  # one PUT: all of it or nothing
            else:
                self._write_renamed(rel, blob)
        except StorageError:
            raise
        except Exception as exc:
            raise self._error("write", rel, exc) from exc
        finally:
            self.fs.invalidate_cache(self._path(rel))

    def _write_renamed(self, rel: str, blob: bytes) -> None:
        """Write ``blob`` to a temporary name beside ``rel``, then rename it into place."""
        path = self._path(rel)
        folder = path.rsplit("/", 1)[0]
        tmp = f"{folder}/{TMP_PREFIX}{uuid.uuid4().hex}{SUFFIX}"
        self.fs.makedirs(folder, exist_ok=True)
        try:
            self.fs.pipe_file(tmp, blob)
            self.fs.mv(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self.fs.rm_file(tmp)
            # a rename that refuses to replace: a concurrent writer of the same digest won
            if isinstance(exc, Exception) and self.size(rel) == len(blob):
                return
            raise

    def listing(self, folder: str = "objects", suffix: str = SUFFIX) -> list[str]:
        objects = self._path(folder)
        self.fs.invalidate_cache(objects)
        try:
            names = self.fs.find(objects)
        except FileNotFoundError:
            return []
        except Exception as exc:
            raise StorageError(
                f"cannot list the artifact store {self.location(folder)}: {mask_secrets(str(exc))}"
            ) from exc
        prefix = f"{objects}/"
        rels = (name.removeprefix(prefix) for name in names if name.startswith(prefix))
        return sorted(
            r
            for r in rels
            if r.endswith(suffix) and not r.rpartition("/")[2].startswith(TMP_PREFIX)
        )

    def remove(self, rel: str) -> bool:
        if self._info(rel) is None:  # object stores delete a missing key without complaint
            return False
        try:
            self.fs.rm_file(self._path(rel))
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise self._error("remove", rel, exc) from exc
        finally:
            self.fs.invalidate_cache(self._path(rel))
        return True

    def mtime(self, rel: str) -> float | None:
        info = self._info(rel)
        if info is None:
            return None
        when = next((info[k] for k in _TIME_KEYS if info.get(k) is not None), None)
        if when is None:
            with contextlib.suppress(NotImplementedError):
                when = self.fs.modified(self._path(rel))
        if when is None:
            raise StorageError(
                f"cannot tell the age of artifact {self.location(rel)}: the filesystem "
                "reports no modification time"
            )
        return _epoch(when)


def _epoch(when: object) -> float:
    """Seconds since the epoch of a time as filesystems report it (naive times are UTC)."""
    if isinstance(when, (int, float)):
        return float(when)
    if isinstance(when, str):
        when = datetime.fromisoformat(when.replace("Z", "+00:00"))
    if not isinstance(when, datetime):
        raise StorageError(f"unexpected modification time {when!r} from the filesystem")
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()
