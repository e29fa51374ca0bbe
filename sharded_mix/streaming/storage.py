"""Object storage (s3://, gs://, az://, http(s)://) for remote shards, through obstore.

``RemoteDir`` is one directory of a store: list it, read, HEAD and download (atomically) objects under it. Users give
one flat ``storage_options`` mapping; it is split into obstore's store config, client options and retry config.
Credentials not given there come from the environment as obstore reads them (``AWS_*``, ``GOOGLE_*``, ``AZURE_*``).
The store is built lazily and never pickled, so DataLoader workers rebuild it. obstore's errors become one short
``ValueError`` naming the URL. obstore cannot run in a process forked after it did I/O (its runtime's threads are gone
and requests hang), so such use raises ``RuntimeError``: start DataLoader workers with 'spawn' or 'forkserver'.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sharded_mix.streaming.credentials import check_s3_credentials

REMOTE_SCHEMES = frozenset({"s3", "s3a", "gs", "az", "abfs", "abfss", "adl", "azure", "http", "https"})

CLIENT_OPTION_KEYS = frozenset(
    {
        "allow_http",
        "allow_invalid_certificates",
        "connect_timeout",
        "default_content_type",
        "default_headers",
        "http1_only",
        "http2_keep_alive_interval",
        "http2_keep_alive_timeout",
        "http2_keep_alive_while_idle",
        "http2_only",
        "pool_idle_timeout",
        "pool_max_idle_per_host",
        "proxy_url",
        "proxy_ca_certificate",
        "proxy_excludes",
        "randomize_addresses",
        "read_timeout",
        "root_certificate",
        "timeout",
        "user_agent",
    }
)
"""Keys of obstore's ``ClientConfig`` (obstore 0.12): they go to ``client_options``, not to the store config (where
obstore panics on them)."""

RETRY_OPTION_KEYS = frozenset({"max_retries", "retry_timeout"})
"""Keys of obstore's ``RetryConfig`` accepted in ``storage_options`` (``retry_timeout`` in seconds)."""

_DURATION_KEYS = frozenset(
    {"connect_timeout", "http2_keep_alive_timeout", "pool_idle_timeout", "read_timeout", "timeout"}
)

DEFAULT_CLIENT_OPTIONS: dict[str, object] = {"connect_timeout": "5s", "read_timeout": "30s", "timeout": "10min"}
"""A stalled read fails after 30 s, but a whole chunk may take 10 min (obstore's default, 30 s, is too short for
64 MB chunks when 64 processes of a node share its link)."""

DEFAULT_RETRY_CONFIG: dict[str, object] = {"max_retries": 5, "retry_timeout": timedelta(seconds=60)}
"""Fewer retries than obstore's (10 within 3 min), so a wrong endpoint fails within seconds."""

_STREAM_PIECE_BYTES = 8 << 20

_ENVIRONMENT_PREFIX = {
    "s3": "AWS",
    "s3a": "AWS",
    "gs": "GOOGLE",
    "az": "AZURE",
    "abfs": "AZURE",
    "abfss": "AZURE",
    "adl": "AZURE",
    "azure": "AZURE",
}
"""The environment variables' prefix of each scheme (obstore reads credentials from ``<PREFIX>_*``)."""


def is_url(path: object) -> bool:
    """Whether ``path`` is a string URL of a remote store obstore reads; local paths, ``Path``s and ``file://`` are
    not."""
    if not isinstance(path, str):
        return False
    scheme, separator, _ = path.partition("://")
    return bool(separator) and scheme.lower() in REMOTE_SCHEMES


def join_url(base: str, *parts: str) -> str:
    """``base`` and ``parts`` joined with exactly one ``/`` between them (``Path`` would turn ``s3://`` into
    ``s3:/``)."""
    pieces = [base.rstrip("/")] + [part.strip("/") for part in parts]
    return "/".join(piece for piece in pieces if piece)


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str | None


def split_storage_options(storage_options: Mapping[str, object] | None, url: str = "") -> tuple[dict, dict, dict]:
    """``(store config, client options, retry config)`` from the user's flat mapping for ``url``.

    Client options are this module's defaults, then the store's environment variables (``AWS_ALLOW_HTTP``...: obstore
    ignores them once ``client_options`` is given), then ``storage_options``.
    """
    config: dict[str, object] = {}
    client = {**DEFAULT_CLIENT_OPTIONS, **_client_options_from_environment(url)}
    retry = dict(DEFAULT_RETRY_CONFIG)
    for key, value in (storage_options or {}).items():
        name = str(key).lower()
        for prefix in ("aws_", "google_", "azure_"):
            if name.startswith(prefix) and name[len(prefix) :] in CLIENT_OPTION_KEYS:
                name = name[len(prefix) :]
        if name in CLIENT_OPTION_KEYS:
            client[name] = _client_value(name, value)
        elif name in RETRY_OPTION_KEYS:
            retry[name] = _retry_value(name, value)
        else:
            config[str(key)] = value
    return config, client, retry


def _client_options_from_environment(url: str) -> dict[str, str]:
    prefix = _ENVIRONMENT_PREFIX.get(url.partition("://")[0].lower())
    if prefix is None:
        return {}
    found = {name: os.environ.get(f"{prefix}_{name.upper()}") for name in CLIENT_OPTION_KEYS}
    return {name: value for name, value in found.items() if value is not None}


def _client_value(name: str, value: object) -> object:
    if isinstance(value, (bool, timedelta, dict, bytes)):
        return value
    if name in _DURATION_KEYS and isinstance(value, (int, float)):
        return timedelta(seconds=value)
    return str(value) if isinstance(value, (int, float)) else value


def _retry_value(name: str, value: object) -> object:
    try:
        if name == "max_retries":
            return int(value)  # type: ignore[arg-type]
        return value if isinstance(value, timedelta) else timedelta(seconds=float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(
            f"storage_options {name}: expected a number{' of seconds' if name == 'retry_timeout' else ''}, "
            f"got {value!r}"
        ) from None


_obstore_pid: int | None = None
"""The process that started obstore's runtime (did I/O); a forked child of it cannot use obstore."""


def _check_not_forked(url: str) -> None:
    global _obstore_pid
    pid = os.getpid()
    if _obstore_pid is None:
        _obstore_pid = pid
    elif _obstore_pid != pid:
        raise RuntimeError(
            f"cannot read {url!r} in process {pid}: it was forked from process {_obstore_pid} after that one used "
            "object storage, and obstore's runtime does not survive fork() (requests would hang); start DataLoader "
            "workers with multiprocessing_context='spawn' or 'forkserver'."
        )


_STATUS = re.compile(r"status code: (\d{3})")
_XML_CODE = re.compile(r"<Code>(.*?)</Code>", re.DOTALL)
_XML_MESSAGE = re.compile(r"<Message>(.*?)</Message>", re.DOTALL)


def _short_reason(err: BaseException) -> tuple[str, str | None]:
    """``(one-line reason, the service's error code or None)`` from obstore's long error text."""
    text = str(err).strip()
    code, message = _XML_CODE.search(text), _XML_MESSAGE.search(text)
    if code:
        return (f"{code.group(1)}: {message.group(1).strip()}" if message else code.group(1)), code.group(1)
    first = text.splitlines()[0] if text else type(err).__name__
    return (first if len(first) <= 300 else first[:297] + "..."), None


def _credentials_hint(url: str) -> str:
    prefix = _ENVIRONMENT_PREFIX.get(url.partition("://")[0].lower())
    return f"storage_options or the {prefix}_* variables" if prefix else "storage_options"


_HTTP_ENDPOINT = re.compile(r"(http://[^/\s]+)")


def storage_error(err: BaseException, url: str, action: str) -> ValueError:
    """One short ``ValueError`` for obstore's error ``err`` while trying to ``action`` (read, list, ...) ``url``."""
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

    reason, code = _short_reason(err)
    status = _STATUS.search(str(err))
    if "BadScheme" in str(err) or "builder error" in reason:
        endpoint = _HTTP_ENDPOINT.search(str(err))
        return ValueError(
            f"cannot {action} {url!r}: the endpoint{' ' + endpoint.group(1) if endpoint else ''} is plain "
            "http://, which is refused unless allowed; add allow_http: true to storage_options (or set "
            "AWS_ALLOW_HTTP=true), or use an https:// endpoint."
        )
    if isinstance(err, FileNotFoundError) or (status and status.group(1) == "404"):
        if action == "list":
            return ValueError(f"cannot list {url!r}: {reason}; check the bucket and path.")
        detail = f" ({reason})" if code and code != "NoSuchKey" else ""
        return ValueError(f"object {url!r} does not exist{detail}")
    if isinstance(err, (PermissionDeniedError, UnauthenticatedError)) or (status and status.group(1) in ("401", "403")):
        return ValueError(f"access to {url!r} was denied ({reason}); check the credentials: {_credentials_hint(url)}.")
    hint = "" if status else "; check the endpoint and the network"
    return ValueError(f"cannot {action} {url!r}: {reason}{hint}")


@contextlib.contextmanager
def _translated_errors(url: str, action: str) -> Iterator[None]:
    from obstore.exceptions import BaseError

    try:
        yield
    except (BaseError, FileNotFoundError) as err:
        raise storage_error(err, url, action) from err


class RemoteDir:
    """A directory of an object store, through obstore; paths given to its methods are relative to it."""

    def __init__(self, url: str, storage_options: Mapping[str, object] | None = None) -> None:
        if not is_url(url):
            raise ValueError(f"{url!r} is not an object store URL (s3://, gs://, az://, http(s)://...)")
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self._store = None

    def __repr__(self) -> str:
        return f"RemoteDir({self.url!r})"  # never the options: they may hold secrets

    def __getstate__(self) -> dict:
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state: dict) -> None:
        self.url, self.storage_options, self._store = state["url"], state["storage_options"], None

    def url_of(self, relative: str = "") -> str:
        return join_url(self.url, relative)

    @property
    def store(self):
        """The obstore store rooted at ``url`` (built on first use); ``ValueError`` for bad ``storage_options``."""
        if self._store is None:
            from obstore.exceptions import BaseError, UnknownConfigurationKeyError
            from obstore.store import from_url

            config, client, retry = split_storage_options(self.storage_options, self.url)
            check_s3_credentials(self.url, config)
            try:
                self._store = from_url(self.url, config=config or None, client_options=client, retry_config=retry)
            except UnknownConfigurationKeyError as err:
                raise ValueError(
                    f"storage_options for {self.url!r}: {_short_reason(err)[0]} (see obstore's store and client "
                    "config keys)"
                ) from err
            except (BaseError, TypeError, ValueError) as err:
                raise ValueError(
                    f"storage_options for {self.url!r} (keys {sorted(self.storage_options)}): {_short_reason(err)[0]}"
                ) from err
        return self._store

    def _store_for_io(self, url: str):
        store = self.store
        _check_not_forked(url)
        return store

    def _path(self, relative: str) -> str:
        return relative.strip("/")

    def list_dir(self, relative: str = "") -> tuple[list[str], dict[str, ObjectInfo]]:
        """Names of the subdirectories and objects directly under ``relative`` (one listing; obstore follows pages)."""
        import obstore

        prefix = self._path(relative)
        url = self.url_of(prefix)
        store = self._store_for_io(url)
        with _translated_errors(url, "list"):
            listing = obstore.list_with_delimiter(store, prefix or None)
        cut = len(prefix) + 1 if prefix else 0
        subdirs = sorted(path[cut:] for path in listing["common_prefixes"] if path[cut:])
        objects = {
            meta["path"][cut:]: ObjectInfo(meta["size"], meta["e_tag"])
            for meta in listing["objects"]
            if meta["path"][cut:]
        }
        return subdirs, objects

    def read_bytes(self, relative: str) -> bytes:
        import obstore

        url = self.url_of(relative)
        store = self._store_for_io(url)
        with _translated_errors(url, "read"):
            return bytes(obstore.get(store, self._path(relative)).bytes())

    def read_range(self, relative: str, start: int, length: int) -> bytes:
        """Bytes ``[start, start + length)`` of one object (fewer past its end; none at or past it)."""
        import obstore

        url = self.url_of(relative)
        size = self.info(relative).size
        if start >= size or length <= 0:
            return b""
        store = self._store_for_io(url)
        with _translated_errors(url, "read"):
            return bytes(obstore.get_range(store, self._path(relative), start=start, length=min(length, size - start)))

    def info(self, relative: str) -> ObjectInfo:
        """Size and ETag of one object (a HEAD request)."""
        import obstore

        url = self.url_of(relative)
        store = self._store_for_io(url)
        with _translated_errors(url, "read"):
            meta = obstore.head(store, self._path(relative))
        return ObjectInfo(meta["size"], meta["e_tag"])

    def download(
        self,
        relative: str,
        destination: str | Path,
        hasher=None,
        check: Callable[[str | None, str], None] | None = None,
    ) -> int:
        """Stream one object into ``destination`` atomically (a temporary file beside it, then ``os.replace``);
        bytes written. With ``hasher`` (``update``/``hexdigest``) the bytes are hashed as they arrive, and
        ``check(etag, hexdigest)`` runs before the rename: what it raises leaves no file behind."""
        import obstore

        url = self.url_of(relative)
        store = self._store_for_io(url)
        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        temporary = destination.with_name(f".{destination.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
        written = 0
        try:
            with open(temporary, "xb") as file:
                with _translated_errors(url, "download"):
                    result = obstore.get(store, self._path(relative))
                    pieces = iter(result.stream(min_chunk_size=_STREAM_PIECE_BYTES))
                while True:
                    with _translated_errors(url, "download"):
                        piece = next(pieces, None)
                    if piece is None:
                        break
                    written += file.write(piece)
                    if hasher is not None:
                        hasher.update(piece)
            if check is not None:
                check(result.meta.get("e_tag"), hasher.hexdigest() if hasher is not None else "")
            os.replace(temporary, destination)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return written
