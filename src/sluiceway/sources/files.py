"""The `files` source: CSV, JSON / NDJSON, Parquet and Avro from a path, a glob or a folder,
local or on S3, plain, gzip or zstd.

Incremental mode reads only files that no earlier commit recorded; the list of files a run
read is its position, committed by the sink in the same commit as the data.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from sluiceway.core import registry, storage
from sluiceway.core.context import RunContext, SourceRead
from sluiceway.core.spec import SourceConfig
from sluiceway.core.storage import StorageOptions
from sluiceway.engines.duckdb import quote_ident
from sluiceway.errors import SluicewayError, SourceError, StorageUnavailable
from sluiceway.sources import file_formats as ff

_SKIP_PREFIXES = (".", "_")


class FilesSourceConfig(SourceConfig):
    """Files in a folder, a glob or a single path; local or s3://."""

    type: Literal["files"] = Field("files", description="Files on disk or in an object store.")
    path: str | list[str] = Field(
        description="A file, a folder (read recursively), a glob, or a list of them."
    )
    format: Literal["auto", "csv", "json", "ndjson", "parquet", "avro"] = Field(
        "auto", description="File format; auto: from the extension, confirmed by the content."
    )
    compression: Literal["auto", "none", "gzip", "zstd"] = Field(
        "auto", description="Compression; auto: from the extension (.gz, .zst)."
    )
    incremental: bool = Field(False, description="Read only files no earlier run committed.")
    delimiter: str = Field(",", description="CSV field delimiter.", min_length=1, max_length=1)
    header: bool = Field(True, description="CSV files start with a header line.")
    quote: str = Field('"', description="CSV quote character.", max_length=1)
    escape: str = Field('"', description="CSV escape character.", max_length=1)
    storage_options: StorageOptions = Field(
        default_factory=dict,
        repr=False,
        description="Object-store options (endpoint_url, region, keys by ${ENV}).",
    )


class FilesSource:
    """Reads the files of a `FilesSourceConfig` into one DuckDB table."""

    def __init__(self, config: FilesSourceConfig) -> None:
        self.config = config

    def read(
        self,
        ctx: RunContext,
        name: str,
        *,
        position: dict[str, Any] | None,
        shape: ff.Shape | None = None,
    ) -> SourceRead:
        """Read every matching file (in incremental mode, those not in `position['files']`).

        `shape` (relation SQL, its columns → SELECT) is applied to each file's rows as they
        are loaded: CSV files are shaped in the statement that parses them.

        Raises:
            SourceError: nothing matches the path, or a file's format is not what it claims.
        """
        found = self.list_files(ctx)
        done = set((position or {}).get("files", [])) if self.config.incremental else set()
        todo = [f for f in found if f not in done]
        stats = {uri: self._stat(uri) for uri in todo}
        stamps: dict[str, str] = {}
        if self.config.incremental:
            stamps = self._changed_since_loaded(ctx, name, found, position or {})
            stamps.update({uri: _stamp(stats[uri]) for uri in todo})
        reads = self._read_all(ctx, name, todo, shape)
        table = ctx.engine.new_name(f"src_{name}")
        self._union(ctx, table, reads, shape)
        rejects = ff.rejects_table([r for read in reads for r in read.rejects])
        return SourceRead(
            table=table,
            rows_in=sum(read.records for read in reads),
            parse_rejects=rejects,
            position={"files": sorted(done | set(todo)), "stamps": stamps}
            if self.config.incremental
            else {"files": todo},
            typed=any(read.typed for read in reads),
            fingerprint=_fingerprint(todo, stats.__getitem__),
            temp_tables=[temp for read in reads for temp in read.temp_tables],
            is_shaped=shape is not None,
        )

    def _changed_since_loaded(
        self, ctx: RunContext, name: str, found: list[str], position: dict[str, Any]
    ) -> dict[str, str]:
        """The size and modification time of the local files loaded before (kept with the
        positions), warning of those that changed since: an incremental load reads a file
        once, so rows added to it later are not read."""
        before = position.get("stamps") or {}
        now = {
            uri: _stamp(self._stat(uri))
            for uri in found
            if uri in before and not storage.is_remote(uri)
        }
        changed = sorted(uri for uri, stamp in now.items() if stamp != before[uri])
        if changed:
            shown = ", ".join(Path(uri).name for uri in changed[:5])
            ctx.events.emit(
                "files_changed_since_loaded",
                source=name,
                files=len(changed),
                hint=f"source {name}: {len(changed)} file(s) loaded by an earlier run changed "
                f"since ({shown}{', …' if len(changed) > 5 else ''}): an incremental load "
                "reads each file once, so what was added to them is not read. Write new data "
                "to new files; to load a changed file again, rename it",
            )
        listed = set(found)
        return {**{uri: stamp for uri, stamp in before.items() if uri in listed}, **now}

    def list_files(self, ctx: RunContext) -> list[str]:
        """Every file the path matches, sorted; raises SourceError when none does."""
        patterns = [self.config.path] if isinstance(self.config.path, str) else self.config.path
        found: list[str] = []
        for pattern in patterns:
            resolved = ctx.resolve(pattern)
            matched = (
                self._list_remote(resolved)
                if storage.is_remote(resolved)
                else _list_local(resolved)
            )
            if not matched:
                raise SourceError(
                    f"no file matches '{pattern}' (resolved to '{resolved}'); check the path, "
                    "or that the folder holds files not starting with '.' or '_'"
                )
            found.extend(matched)
        return sorted(dict.fromkeys(found))

    @contextlib.contextmanager
    def _remote(self, what: str, uri: str) -> Iterator[None]:
        """A storage failure as a SourceError, or StorageUnavailable (retried by a
        `retries:` policy) when the server could not be reached."""
        try:
            yield
        except Exception as exc:
            if isinstance(exc, SluicewayError) or not storage.is_storage_error(exc):
                raise
            summary = storage.error_summary(exc, self.config.storage_options)
            if storage.is_unreachable(exc):
                raise StorageUnavailable(
                    f"cannot {what} {uri}: {summary}. {storage.UNREACHABLE_ADVICE}"
                ) from exc
            raise SourceError(
                f"cannot {what} {uri}: {summary}. Check the bucket, the credentials and "
                "the source's storage_options"
            ) from exc

    def _list_remote(self, uri: str) -> list[str]:
        with self._remote("list", uri):
            return self._list_remote_files(uri)

    def _list_remote_files(self, uri: str) -> list[str]:
        fs, path = storage.arrow_filesystem(uri, self.config.storage_options)
        scheme = uri.split("://", 1)[0]
        import pyarrow.fs as pafs

        has_glob = any(c in path for c in "*?[")
        base = path.split("*", 1)[0].rsplit("/", 1)[0] if has_glob else path
        info = fs.get_file_info(base)
        if info.type == pafs.FileType.File:
            return [f"{scheme}://{path}"]
        if info.type == pafs.FileType.NotFound:
            bucket = path.split("/", 1)[0]
            if _bucket_is_missing(fs, bucket):
                raise SourceError(
                    f"the bucket '{bucket}' of {uri} does not exist (or these credentials "
                    "cannot see it); check the path and the source's storage_options"
                )
            return []
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
        files = [
            i.path for i in infos if i.type == pafs.FileType.File and not _hidden(i.path, base)
        ]
        if has_glob:
            files = [f for f in files if fnmatch.fnmatch(f, path)]
        return [f"{scheme}://{f}" for f in sorted(files)]

    def _stat(self, uri: str) -> tuple[int | None, int | None]:
        """(size, modification time in ns) of a local or remote file."""
        if not storage.is_remote(uri):
            stat = os.stat(uri)
            return stat.st_size, stat.st_mtime_ns
        fs, path = storage.arrow_filesystem(uri, self.config.storage_options)
        with self._remote("look up", uri):
            info = fs.get_file_info(path)
        return info.size, info.mtime_ns

    def _read_all(
        self, ctx: RunContext, name: str, uris: list[str], shape: ff.Shape | None
    ) -> list[ff.FileRead]:
        """Read the files; plain CSV files that share a header are parsed by one scan."""
        located = []
        for index, uri in enumerate(uris):
            ctx.events.emit(
                "progress", stage=f"opening {name}", done=index, total=len(uris), unit="files"
            )
            local = self.localize(ctx, uri)
            compression = ff.compression_of(uri, self.config.compression)
            located.append(
                (uri, local, compression, ff.format_of(local, self.config.format, compression))
            )
        batch = self._csv_batch(ctx, located)
        ctx.events.emit("progress", stage=f"reading {name}", done=0, total=len(uris), unit="files")
        reads = (
            [
                self._guarded(
                    ctx,
                    ", ".join(u for u, _, _, _ in batch),
                    "csv",
                    lambda: ff.read_csv_files(
                        ctx.engine,
                        [(loc, u) for u, loc, _, _ in batch],
                        batch[0][2],
                        self._csv_options(),
                        shape,
                    ),
                )
            ]
            if batch
            else []
        )
        rest = [item for item in located if item not in batch]
        for index, (uri, local, compression, fmt) in enumerate(rest):
            ctx.events.emit(
                "progress",
                stage=f"reading {name}",
                done=len(batch) + index,
                total=len(uris),
                unit="files",
            )
            reads.append(self._read_one(ctx, uri, local, compression, fmt, shape))
        return reads

    def _csv_batch(
        self, ctx: RunContext, located: list[tuple[str, str, ff.Compression, ff.Format]]
    ) -> list[tuple[str, str, ff.Compression, ff.Format]]:
        """The CSV files that can be parsed together: same compression and same header."""
        csv = [item for item in located if item[3] == "csv"]
        if len(csv) < 2 or len({item[2] for item in csv}) > 1:
            return []
        headers = {
            tuple(ff.csv_header(local, compression, self._csv_options(), ctx.engine))
            for _, local, compression, _ in csv
        }
        return csv if len(headers) == 1 else []

    def _csv_options(self) -> ff.CsvOptions:
        return ff.CsvOptions(
            self.config.delimiter, self.config.header, self.config.quote, self.config.escape
        )

    @staticmethod
    def _guarded(
        ctx: RunContext, uri: str, fmt: str, read: Callable[[], ff.FileRead]
    ) -> ff.FileRead:
        try:
            return read()
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(
                f"cannot read '{uri}' as {fmt}: {exc}", context={"file": uri}
            ) from exc

    def _read_one(
        self,
        ctx: RunContext,
        uri: str,
        local: str,
        compression: ff.Compression,
        fmt: ff.Format,
        shape: ff.Shape | None,
    ) -> ff.FileRead:
        if fmt == "csv":
            return self._guarded(
                ctx,
                uri,
                fmt,
                lambda: ff.read_csv(
                    ctx.engine, local, uri, compression, self._csv_options(), shape
                ),
            )
        read = self._guarded(
            ctx, uri, fmt, lambda: ff.READERS[fmt](ctx.engine, local, uri, compression)
        )
        return read if shape is None else _shaped(ctx, read, shape)

    def localize(self, ctx: RunContext, uri: str) -> str:
        """A local path holding the file: `uri` itself, or a copy of a remote object in the
        run's cache folder."""
        if not storage.is_remote(uri):
            return uri
        fs, path = storage.arrow_filesystem(uri, self.config.storage_options)
        cache = ctx.state_dir / "cache"
        _sweep(cache, keep=ctx.run_id)
        target = cache / ctx.run_id / hashlib.sha256(uri.encode()).hexdigest()[:16]
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        (cache / ctx.run_id).chmod(0o700)
        local = target / Path(path).name
        with (
            self._remote("copy", uri),
            fs.open_input_stream(path, compression=None) as src,
            open(local, "wb") as dst,
        ):
            while chunk := src.read(8 << 20):
                dst.write(chunk)
        return str(local)

    @staticmethod
    def _union(
        ctx: RunContext, table: str, reads: list[ff.FileRead], shape: ff.Shape | None
    ) -> None:
        if not reads:
            empty = "SELECT NULL::VARCHAR AS __sw_file, NULL::BIGINT AS __sw_row WHERE false"
            select = empty if shape is None else shape(f"({empty})", ["__sw_file", "__sw_row"])
            ctx.engine.create_table(table, select)
            return
        union = " UNION ALL BY NAME ".join(f"({read.select_sql})" for read in reads)
        ctx.engine.create_view(table, union, purpose="combine source files")


def _bucket_is_missing(fs: Any, bucket: str) -> bool:
    """True only when the store says the bucket does not exist: credentials limited to a
    prefix may not look at the bucket itself, and that is no reason to fail the run."""
    import pyarrow.fs as pafs

    try:
        return bool(fs.get_file_info(bucket).type == pafs.FileType.NotFound)
    except OSError:
        return False


def _sweep(cache: Path, *, keep: str, older_than_s: float = 86_400) -> None:
    """Remove what killed runs left in the cache (a run removes its own folder when it ends):
    folders untouched for a day."""
    if not cache.is_dir():
        return
    limit = time.time() - older_than_s
    for folder in cache.iterdir():
        with contextlib.suppress(OSError):
            if folder.name != keep and folder.stat().st_mtime < limit:
                shutil.rmtree(folder, ignore_errors=True)


def _shaped(ctx: RunContext, read: ff.FileRead, shape: ff.Shape) -> ff.FileRead:
    """A file already loaded into a table, shaped into another one (the first is dropped)."""
    engine = ctx.engine
    columns = engine.columns_of(read.select_sql)
    table = engine.create_table(engine.new_name("shaped"), shape(f"({read.select_sql})", columns))
    engine.drop(*read.temp_tables)
    return ff.FileRead(
        f"SELECT * FROM {quote_ident(table)}", read.records, read.rejects, read.typed, [table]
    )


def _stamp(stat: tuple[int | None, int | None]) -> str:
    return f"{stat[0]}:{stat[1]}"


def _fingerprint(uris: list[str], stat: Callable[[str], tuple[int | None, int | None]]) -> str:
    """Identifies the files read: path, size and modification time (local or remote: an
    object rewritten under the same key is new input, not a committed one)."""
    digest = hashlib.sha256()
    for uri in uris:
        size, mtime_ns = stat(uri)
        digest.update(f"{uri}:{size}:{mtime_ns}|".encode())
    return digest.hexdigest()[:20]


def _list_local(pattern: str) -> list[str]:
    path = Path(pattern)
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        return sorted(
            str(p) for p in path.rglob("*") if p.is_file() and not _hidden(str(p), str(path))
        )
    return sorted(
        p
        for p in glob.glob(pattern, recursive=True)
        if Path(p).is_file() and not Path(p).name.startswith(_SKIP_PREFIXES)
    )


def _hidden(path: str, base: str) -> bool:
    relative = path[len(base) :].lstrip("/")
    return any(part.startswith(_SKIP_PREFIXES) for part in relative.split("/"))


registry.register("source", "files", FilesSourceConfig, FilesSource)

__all__ = ["FilesSource", "FilesSourceConfig"]
