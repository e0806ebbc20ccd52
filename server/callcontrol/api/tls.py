"""TLS credentials of the gRPC server, read from the files the configuration names."""

from __future__ import annotations

from pathlib import Path

import grpc

from callcontrol.config import ConfigError, GrpcTlsConfig


def _read(path: str, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}: {exc}") from exc


def server_credentials(tls: GrpcTlsConfig) -> grpc.ServerCredentials | None:
    """``None`` for plaintext; with ``client_ca_file`` every client must present a certificate."""
    if not tls.enabled:
        return None
    key = _read(tls.key_file, "grpc.tls.key_file")
    chain = _read(tls.cert_file, "grpc.tls.cert_file")
    ca = _read(tls.client_ca_file, "grpc.tls.client_ca_file") if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=ca, require_client_auth=ca is not None
    )
