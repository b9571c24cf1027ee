"""Where state and output live: a local folder or an object-store prefix, behind one type.

Every configured location (``features.state_dir``, ``sink.log_dir``, ``models_dir``, the
backfill's ``--data``/``--out``) is a local path (relative paths against the repository, as
``resolve_path``) or a URI: ``s3://bucket/prefix``, ``gs://bucket/prefix``,
``file:///abs/path``, or any scheme fsspec knows when it is installed. ``locate`` turns one
into a ``Location``: a pyarrow filesystem and a path on it, which pyarrow's Parquet and
dataset functions take as they are (``filesystem=loc.fs``, ``loc.path``).

Credentials and endpoints come from the environment, never from a config file: pyarrow's
S3 client reads ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` (an S3-compatible store such as
MinIO) and the instance's or pod's role; GCS reads ``GOOGLE_APPLICATION_CREDENTIALS``.

Atomic publish: ``write_bytes`` leaves either the old object or the new one, never a torn
one. Locally that is a sibling temporary file, fsynced and renamed over the target; on an
object store an upload becomes visible only when it completes (a single PUT, or a multipart
upload's final step), so the object is written in place. Renames exist only locally: on an
object store a "move" is a copy and a delete, so code that publishes by renaming writes the
final name directly there instead (``atomic_rename``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from orchestrator import resolve_path

LOCAL = pafs.LocalFileSystem()
_ENDPOINT_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


@dataclass(frozen=True)
class Entry:
    """One file found by ``Location.files``."""

    location: Location
    size: int
    mtime: float  # seconds since the epoch

    @property
    def name(self) -> str:
        return self.location.name


class Location:
    """A file or folder on a filesystem: ``fs`` and ``path`` as pyarrow wants them."""

    __slots__ = ("fs", "path", "scheme")

    def __init__(self, fs: pafs.FileSystem, path: str, scheme: str = ""):
        self.fs, self.path, self.scheme = fs, path.rstrip("/") or path, scheme

    @property
    def local(self) -> bool:
        return not self.scheme

    @property
    def uri(self) -> str:
        return self.path if self.local else f"{self.scheme}://{self.path}"

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and (self.uri == other.uri)

    def __hash__(self) -> int:
        return hash(self.uri)

    def __lt__(self, other: Location) -> bool:
        return self.uri < other.uri

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def parent(self) -> Location:
        return Location(self.fs, str(PurePosixPath(self.path).parent), self.scheme)

    def __truediv__(self, part: str) -> Location:
        return Location(self.fs, f"{self.path}/{part}", self.scheme)

    def sibling(self, suffix: str) -> Location:
        """``<folder>-<suffix>`` beside this one (the log's WAL, features, outcomes)."""
        return self.parent / f"{self.name}-{suffix}"

    def local_path(self) -> Path:
        if not self.local:
            raise ValueError(f"{self.uri} is not on the local disk")
        return Path(self.path)

    # --- files --------------------------------------------------------------------------

    def exists(self) -> bool:
        if self.local:
            return os.path.exists(self.path)
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        if self.local:
            return os.path.isdir(self.path)
        return self.fs.get_file_info(self.path).type == pafs.FileType.Directory

    def stat(self) -> Entry:
        """This file's size and modification time (``FileNotFoundError`` when it is gone)."""
        if self.local:
            found = os.stat(self.path)
            return Entry(self, found.st_size, found.st_mtime)
        info = self.fs.get_file_info(self.path)
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(self.uri)
        return Entry(self, info.size or 0, _seconds(info.mtime))

    def read_bytes(self) -> bytes:
        """The file's content (``FileNotFoundError`` when there is none)."""
        if self.local:
            return Path(self.path).read_bytes()
        try:
            with self.fs.open_input_stream(self.path) as stream:
                return stream.read()
        except OSError as exc:
            if self.fs.get_file_info(self.path).type == pafs.FileType.NotFound:
                raise FileNotFoundError(self.uri) from exc
            raise

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def write_bytes(self, data: bytes) -> None:
        """Publish ``data`` whole: readers see the previous content or this, never a part."""
        if self.local:
            target = Path(self.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
            return
        with self.fs.open_output_stream(self.path) as stream:  # visible when complete
            stream.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def mkdirs(self) -> None:
        """The folder (and its parents) locally; nothing to do on an object store."""
        if self.local:
            os.makedirs(self.path, exist_ok=True)

    def delete(self) -> None:
        """Remove the file if it is there."""
        if self.local:
            Path(self.path).unlink(missing_ok=True)
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.path)

    def delete_tree(self) -> None:
        """Remove the folder and everything under it, if it is there."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_dir(self.path)

    def files(self, prefix: str = "", suffix: str = "", recursive: bool = False) -> list[Entry]:
        """The files in this folder (or under it) whose names match, sorted by path; none
        when the folder does not exist."""
        if self.local and not recursive:
            return self._scan(prefix, suffix)
        infos = self.fs.get_file_info(
            pafs.FileSelector(self.path, recursive=recursive, allow_not_found=True)
        )
        found = []
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            name = info.base_name
            if name.startswith(prefix) and name.endswith(suffix):
                found.append(
                    Entry(
                        Location(self.fs, info.path, self.scheme),
                        info.size or 0,
                        _seconds(info.mtime),
                    )
                )
        return sorted(found, key=lambda e: e.location.path)

    def _scan(self, prefix: str, suffix: str) -> list[Entry]:
        """``files`` on the local disk, by ``os.scandir`` (several times faster than the
        generic listing: the log's readers list every partition folder per request)."""
        try:
            entries = list(os.scandir(self.path))
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        for e in entries:
            if not (e.name.startswith(prefix) and e.name.endswith(suffix)):
                continue
            try:
                if not e.is_file():
                    continue
                stat = e.stat()
            except FileNotFoundError:  # removed since the listing
                continue
            found.append(Entry(Location(self.fs, e.path, ""), stat.st_size, stat.st_mtime))
        return sorted(found, key=lambda e: e.location.path)

    def dirs(self, prefix: str = "") -> list[Location]:
        """The folders in this folder whose names start with ``prefix``, sorted. On an object
        store a folder is a common prefix of keys: it exists while a file is under it."""
        if self.local:
            try:
                return sorted(
                    Location(self.fs, e.path, "")
                    for e in os.scandir(self.path)
                    if e.name.startswith(prefix) and e.is_dir()
                )
            except (FileNotFoundError, NotADirectoryError):
                return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return sorted(
            Location(self.fs, i.path, self.scheme)
            for i in infos
            if i.type == pafs.FileType.Directory and i.base_name.startswith(prefix)
        )

    def atomic_rename(self, target: Location) -> None:
        """Move a finished file over ``target`` (local only: see the module's docstring)."""
        if not self.local:
            raise ValueError("object stores publish by writing the final name, not by rename")
        Path(target.path).parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, target.path)


def write_parquet(table: pa.Table, where: Location, **options) -> None:
    """Publish ``table`` as the Parquet file ``where``, whole (see ``Location.write_bytes``):
    locally under a dot-name readers skip, then renamed; on an object store, uploaded."""
    if not where.local:
        pq.write_table(table, where.path, filesystem=where.fs, **options)
        return
    where.parent.mkdirs()
    tmp = where.parent / f".{where.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        pq.write_table(table, tmp.path, **options)
        tmp.atomic_rename(where)
    except BaseException:
        tmp.delete()
        raise


def _seconds(mtime: datetime | float | None) -> float:
    if mtime is None:
        return 0.0
    return mtime.timestamp() if isinstance(mtime, datetime) else float(mtime)


_filesystems: dict[tuple, pafs.FileSystem] = {}
_lock = threading.Lock()


def locate(where: str | Path | Location) -> Location:
    """The ``Location`` a configured path or URI names (see the module's docstring). A
    string is a config's value: a relative path is relative to the repository; a ``Path``
    is relative to the working directory, as ``Path`` itself means it."""
    if isinstance(where, Location):
        return where
    if isinstance(where, Path):  # code's own path (a CLI argument, a test's folder): as is
        return Location(LOCAL, str(where.expanduser().absolute()))
    text = str(where)
    if "://" not in text:
        return Location(LOCAL, str(resolve_path(text)))
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if scheme == "file":
        return Location(LOCAL, str(resolve_path(rest)))
    bucket = rest.split("/", 1)[0]
    key = (scheme, bucket, *(os.environ.get(name) for name in _ENDPOINT_ENV))
    with _lock:
        fs = _filesystems.get(key)
        if fs is None:
            fs = _filesystems[key] = _filesystem(scheme, text)
    return Location(fs, rest.rstrip("/"), scheme)


def _s3_options(uri: str) -> str:
    """``uri`` with the client options tickcast wants: the region (without one pyarrow asks
    AWS for the bucket's, a network call even for an S3-compatible store: the environment's,
    or us-east-1 with a custom endpoint) and delayed open, which makes a small write one
    PutObject instead of a three-request multipart upload (a WAL record, a checkpoint)."""
    base, _, query = uri.partition("?")
    options = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region is None and (
        os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    ):
        region = "us-east-1"  # what S3-compatible stores answer to
    if region:
        options.setdefault("region", region)
    options.setdefault("allow_delayed_open", "true")
    return base + "?" + "&".join(f"{k}={v}" for k, v in options.items())


def _filesystem(scheme: str, uri: str) -> pafs.FileSystem:
    if scheme == "s3":
        uri = _s3_options(uri)
    try:
        return pafs.FileSystem.from_uri(uri)[0]
    except Exception as pyarrow_error:  # a scheme pyarrow has no client for: fsspec's
        try:
            import fsspec

            return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(scheme)))
        except (ImportError, ValueError) as fsspec_error:
            raise ValueError(
                f"no filesystem for {scheme}:// ({pyarrow_error}; {fsspec_error}): pyarrow "
                "knows s3, gs and hdfs; other schemes need fsspec and its plugin installed"
            ) from pyarrow_error
