"""An S3 server for tests: moto's, in a thread of this process, on 127.0.0.1 at a port the OS picks.

Use it with ``from s3_server import s3`` in a test module. Nothing global is left changed: credentials and the
endpoint travel in ``s3.options`` (the ``storage_options`` that work) and in ``s3.client``, never in the environment.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REGION = "us-east-1"
_bucket_numbers = itertools.count()  # moto keeps buckets per process: names stay unique across servers


@dataclass
class S3Server:
    endpoint: str
    client: object = field(repr=False)
    options: dict = field(repr=False)

    def new_bucket(self) -> str:
        """A fresh, empty bucket's name."""
        name = f"bucket-{next(_bucket_numbers)}"
        self.client.create_bucket(Bucket=name)
        return name

    def upload(self, local_dir: Path, url: str) -> None:
        """Upload the tree under ``local_dir`` so that ``url`` (``s3://bucket/prefix``) mirrors it."""
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        for path in sorted(Path(local_dir).rglob("*")):
            if path.is_file():
                key = "/".join(part for part in (prefix.strip("/"), path.relative_to(local_dir).as_posix()) if part)
                self.client.upload_file(str(path), bucket, key)

    def delete(self, url: str) -> None:
        """Delete the object at ``url`` (``s3://bucket/key``)."""
        bucket, _, key = url.removeprefix("s3://").partition("/")
        self.client.delete_object(Bucket=bucket, Key=key)

    @contextlib.contextmanager
    def checking_credentials(self) -> Iterator[None]:
        """While active, moto authenticates requests, so the dummy keys get ``403 InvalidAccessKeyId``."""
        from moto import settings

        saved = settings.INITIAL_NO_AUTH_ACTION_COUNT
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        try:
            yield
        finally:
            settings.INITIAL_NO_AUTH_ACTION_COUNT = saved


def fetch_chunk_in_this_process(cache_dir: str, options: dict, shard, chunk: int, start, results) -> None:
    """A process's part in a race for one chunk (a ``multiprocessing`` target: light to import under 'spawn')."""
    from sharded_mix.streaming.cache import ChunkCache

    cache = ChunkCache(cache_dir, options)
    start.wait()
    cache.chunk_file(shard, chunk)
    results.put(cache.downloads)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    import boto3
    from moto.server import ThreadedMotoServer

    request_log = logging.getLogger("werkzeug")
    saved_level = request_log.level
    request_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        keys = {"access_key_id": "testing", "secret_access_key": "testing"}
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=keys["access_key_id"],
            aws_secret_access_key=keys["secret_access_key"],
        )
        yield S3Server(endpoint, client, {"endpoint": endpoint, "region": REGION, **keys, "allow_http": True})
    finally:
        server.stop()
        request_log.setLevel(saved_level)
