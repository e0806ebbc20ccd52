"""The REST layer: Envoy's gRPC-JSON transcoder in front of the gRPC server.

Everything is derived from the descriptor set built from ``proto/``: Envoy's
routes and transcoder config (``render_envoy_config``), the OpenAPI document
(``build_openapi``), and a child-process runner (``EnvoyProcess``).
"""

from callcontrol.rest.descriptor import (
    ApiDescriptor,
    DescriptorError,
    HttpBinding,
    default_descriptor_path,
    load_api,
)
from callcontrol.rest.envoy_config import render_envoy_config
from callcontrol.rest.envoy_process import (
    EnvoyError,
    EnvoyFiles,
    EnvoyProcess,
    find_envoy_binary,
    validate_config,
    write_run_files,
)
from callcontrol.rest.openapi import build_openapi, render_openapi

__all__ = [
    "ApiDescriptor",
    "DescriptorError",
    "EnvoyError",
    "EnvoyFiles",
    "EnvoyProcess",
    "HttpBinding",
    "build_openapi",
    "default_descriptor_path",
    "find_envoy_binary",
    "load_api",
    "render_envoy_config",
    "render_openapi",
    "validate_config",
    "write_run_files",
]
