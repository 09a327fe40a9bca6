"""How ``StorageConfig``'s credential keywords become options of an fsspec filesystem.

Only what the caller set is passed on; everything else is left to the client
library's own chain (environment variables such as ``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``STORAGE_EMULATOR_HOST``,
``AZURE_STORAGE_CONNECTION_STRING``; profile files; instance roles).
"""

from __future__ import annotations

from typing import Any

from ..config import StorageConfig

PROTOCOLS = {"s3": "s3", "gcs": "gcs", "azure": "az"}
PACKAGES = {"s3": "s3fs", "gcs": "gcsfs", "azure": "adlfs"}

# Directory listings must never be served from a cache: workers appear while a
# process runs, and consolidation has to see every one of them.
_ALWAYS = {"use_listings_cache": False, "skip_instance_cache": True}


def filesystem_options(config: StorageConfig) -> dict[str, Any]:
    """Keyword arguments for the fsspec filesystem of ``config``; ``extra_config`` is merged last.

    >>> options = filesystem_options(StorageConfig("s3://b/p", s3_region="eu-west-1", s3_endpoint_url="http://h:9000"))
    >>> options["endpoint_url"], options["client_kwargs"]
    ('http://h:9000', {'region_name': 'eu-west-1'})
    """
    if config.storage_type == "s3":
        options: dict[str, Any] = {
            "key": config.s3_access_key_id,
            "secret": config.s3_secret_access_key,
            "endpoint_url": config.s3_endpoint_url,
            "client_kwargs": {"region_name": config.s3_region} if config.s3_region else None,
        }
    elif config.storage_type == "gcs":
        options = {"project": config.gcs_project_id, "token": config.gcs_credentials}
    elif config.storage_type == "azure":
        options = {"connection_string": config.azure_storage_connection_string}
    else:
        options = {}
    return {**_ALWAYS, **{k: v for k, v in options.items() if v is not None}, **config.extra_config}
