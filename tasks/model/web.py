"""nginx in front of Galaxy: its ports, TLS and limits (pure, like the rest of the model)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GalaxyFront:
    """nginx in front of Galaxy's gunicorn (which listens on loopback only)."""

    http_port: int = 80
    https_port: int = 443
    tls_certificate: str | None = None
    tls_key: str | None = None
    server_name: str = "_"
    upload_max_size: str = "10g"

    @property
    def tls(self) -> bool:
        return bool(self.tls_certificate)

    @property
    def url(self) -> str:
        """Galaxy through nginx, as the Galaxy host itself reaches it (the deploy's checks):
        plain HTTP on loopback, with TLS too (the certificate names the public host)."""
        return f"http://127.0.0.1:{self.http_port}"


def front_from(config: Mapping[str, Any], problems: list[str]) -> GalaxyFront:
    """Check the nginx settings (each problem names its setting and the fix)."""
    ports = {}
    for key in ("galaxy_http_port", "galaxy_https_port"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            problems.append(f"{key}: '{value}' is not a TCP port (1-65535)")
        ports[key] = value
    if ports["galaxy_http_port"] == ports["galaxy_https_port"]:
        problems.append("galaxy_https_port: is galaxy_http_port's port too; give each its own")
    certificate, key = config["galaxy_tls_certificate"], config["galaxy_tls_key"]
    if bool(certificate) != bool(key):
        problems.append("galaxy_tls_certificate, galaxy_tls_key: TLS needs both (paths on the Galaxy host), or neither")
    for name, path in (("galaxy_tls_certificate", certificate), ("galaxy_tls_key", key)):
        if path and not str(path).startswith("/"):
            problems.append(f"{name}: '{path}' is not an absolute path on the Galaxy host")
    server_name = str(config["galaxy_server_name"])
    if not re.fullmatch(r"[A-Za-z0-9_.*~^$-]+( [A-Za-z0-9_.*~^$-]+)*", server_name):
        problems.append(f"galaxy_server_name: '{server_name}' is not an nginx server_name (names separated by spaces, or _)")
    size = str(config["galaxy_upload_max_size"])
    if not re.fullmatch(r"\d+[kKmMgG]?", size):
        problems.append(f"galaxy_upload_max_size: '{size}' is not an nginx size; e.g. 10g, 500m or 0 (no limit)")
    return GalaxyFront(
        http_port=ports["galaxy_http_port"], https_port=ports["galaxy_https_port"],
        tls_certificate=certificate or None, tls_key=key or None, server_name=server_name, upload_max_size=size,
    )


def check_loopback_bind(bind: str, problems: list[str]) -> None:
    """gunicorn listens where only nginx (on the same host) reaches it."""
    address = bind.rsplit(":", 1)[0].strip("[]")
    if not (address.startswith("127.") or address in ("localhost", "::1")):
        problems.append(f"galaxy_bind: '{bind}' would let other hosts reach gunicorn past nginx; "
                        "bind to loopback, e.g. 127.0.0.1:8080 (nginx serves Galaxy on galaxy_http_port)")
