"""``s3://`` without credentials stops with how to give them, asking no instance metadata endpoint; plain http://
without ``allow_http`` names it. Against moto's S3 on 127.0.0.1: no request leaves the machine."""

from __future__ import annotations

from pathlib import Path

import pytest
import s3_server

from sharded_mix.streaming.credentials import S3_CREDENTIAL_KEYS, check_s3_credentials
from sharded_mix.streaming.storage import RemoteDir, split_storage_options

s3 = s3_server.s3  # the fixture
NO_CREDENTIALS = r"^no credentials found for '{url}': set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give "


@pytest.fixture
def bucket(s3, tmp_path: Path, monkeypatch) -> str:
    """``s3://<new bucket>/mix`` holding ``readme.txt``; no credentials in the environment."""
    for key in S3_CREDENTIAL_KEYS:
        monkeypatch.delenv(f"AWS_{key.upper()}", raising=False)
    (tmp_path / "readme.txt").write_bytes(b"hello")
    url = f"s3://{s3.new_bucket()}/mix"
    s3.upload(tmp_path, url)
    return url


def endpoint_only(s3) -> dict:
    """moto's endpoint, without the keys."""
    return {key: value for key, value in s3.options.items() if key not in ("access_key_id", "secret_access_key")}


def test_no_credentials_is_an_error_before_any_store_is_built(bucket, s3):
    config, _, _ = split_storage_options(endpoint_only(s3), bucket)
    with pytest.raises(ValueError, match=NO_CREDENTIALS.format(url=bucket)):
        check_s3_credentials(bucket, config)
    directory = RemoteDir(bucket, endpoint_only(s3))
    with s3.checking_credentials():
        with pytest.raises(ValueError, match=NO_CREDENTIALS.format(url=bucket) + r".*skip_signature: true.*"):
            directory.list_dir()
    assert directory._store is None  # nothing was built, so nothing asked the instance metadata endpoint
    for given in ({"access_key_id": "k", "secret_access_key": "s"}, {"AWS_SKIP_SIGNATURE": "true"}):
        check_s3_credentials(bucket, given)
    with pytest.raises(ValueError, match="no credentials found"):
        check_s3_credentials(bucket, {"skip_signature": "false", "region": "r"})
    check_s3_credentials("gs://bucket/mix", {})  # other stores keep obstore's own lookup


def test_credentials_from_the_environment_count(bucket, s3, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.options["access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.options["secret_access_key"])
    assert RemoteDir(bucket, endpoint_only(s3)).read_bytes("readme.txt") == b"hello"


def test_a_public_object_reads_with_skip_signature(bucket, s3):
    name, _, prefix = bucket.removeprefix("s3://").partition("/")
    s3.client.put_object(Bucket=name, Key=f"{prefix}/public.txt", Body=b"for all", ACL="public-read")
    directory = RemoteDir(bucket, {**endpoint_only(s3), "skip_signature": True})
    assert directory.read_bytes("public.txt") == b"for all"
    with pytest.raises(ValueError, match="denied"):  # unsigned requests for a private object
        directory.read_bytes("readme.txt")


def test_instance_credentials_are_asked_only_at_the_metadata_endpoint_given(bucket, s3):
    """moto serves instance credentials too: the endpoint given (127.0.0.1) is the one asked."""
    options = {**endpoint_only(s3), "metadata_endpoint": s3.endpoint}
    assert RemoteDir(bucket, options).read_bytes("readme.txt") == b"hello"


def test_a_plain_http_endpoint_without_allow_http_names_the_option(bucket, s3):
    options = {key: value for key, value in s3.options.items() if key != "allow_http"}
    with pytest.raises(
        ValueError,
        match=rf"^cannot read '{bucket}/readme.txt': the endpoint {s3.endpoint} is plain http://, which is refused "
        r"unless allowed; add allow_http: true to storage_options",
    ):
        RemoteDir(bucket, options).read_bytes("readme.txt")
