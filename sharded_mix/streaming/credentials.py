"""Whether an ``s3://`` store was given credentials, checked before obstore builds it.

Without credentials obstore's S3 store asks the instance metadata endpoint (``http://169.254.169.254``: traffic off
the machine, slow to fail outside a cloud instance) and the error then reads as 'denied'. ``check_s3_credentials``
stops first with one ``ValueError`` saying how to give them; ``metadata_endpoint`` (in ``storage_options`` or
``AWS_METADATA_ENDPOINT``) is how a run on a cloud instance asks for the instance's role.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

S3_CREDENTIAL_KEYS = (
    "access_key_id",
    "secret_access_key",
    "skip_signature",
    "metadata_endpoint",
    "imdsv1_fallback",
    "container_credentials_relative_uri",
    "container_credentials_full_uri",
    "web_identity_token_file",
)
"""Where obstore's S3 store gets credentials (or is told to need none): any of these set in ``storage_options`` (with
or without the ``aws_`` prefix) or as ``AWS_<KEY>`` in the environment counts as credentials given."""


def is_set(value: object) -> bool:
    """An option's value that turns it on: not None, empty, ``false`` or ``0``."""
    return value is not None and str(value).strip().lower() not in ("", "false", "0")


def check_s3_credentials(url: str, config: Mapping[str, object]) -> None:
    """For an ``s3://`` (``s3a://``) URL whose store ``config`` and environment give no credentials: a ``ValueError``
    saying how to give them, before the store is built (so nothing asks the instance metadata endpoint)."""
    if url.partition("://")[0].lower() not in ("s3", "s3a"):
        return
    given = {str(key).lower().removeprefix("aws_") for key, value in config.items() if is_set(value)}
    if any(key in given or is_set(os.environ.get(f"AWS_{key.upper()}")) for key in S3_CREDENTIAL_KEYS):
        return
    raise ValueError(
        f"no credentials found for {url!r}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give storage_options "
        "access_key_id and secret_access_key; for a public bucket give storage_options skip_signature: true; on a "
        "cloud instance, to use its role, give metadata_endpoint: http://169.254.169.254 (the instance metadata "
        "endpoint is not asked otherwise)."
    )
