"""`callplane serve`: run the server with embedded defaults; every flag has an environment twin."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from callplane._version import __version__


def _hostport(value: str, default_port: int) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, default_port
    host = host.strip("[]")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}") from None


def _port_range(value: str) -> tuple[int, int]:
    low, sep, high = value.partition("-")
    try:
        lo, hi = int(low), int(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH, got {value!r}") from None
    if not sep or not 1024 <= lo < hi <= 65535:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH within 1024-65535, got {value!r}")
    return lo, hi


def _route(value: str) -> tuple[str, str]:
    name, sep, url = value.partition("=")
    if not sep or not name or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected NAME=http(s)://URL, got {value!r}")
    return name, url


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"CALLPLANE_{name}", default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callplane", description="Calling API server")
    parser.add_argument("--version", action="version", version=f"callplane {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server (HTTP API, SIP, RTP)")
    serve.add_argument("--http", default=_env("HTTP", "127.0.0.1:8080"), metavar="HOST:PORT")
    serve.add_argument("--sip", default=_env("SIP", "127.0.0.1:5060"), metavar="HOST:PORT")
    serve.add_argument(
        "--rtp-ports",
        default=_env("RTP_PORTS", "20000-20999"),
        type=_port_range,
        metavar="LOW-HIGH",
    )
    serve.add_argument("--data", default=_env("DATA", "data"), type=Path, metavar="DIR")
    serve.add_argument("--project", default=_env("PROJECT", ""), metavar="ID")
    serve.add_argument("--token", default=_env("TOKEN", ""), metavar="TOKEN")
    env_routes = [r for r in (_env("ROUTES", "") or "").split(",") if r.strip()]
    serve.add_argument(
        "--route",
        action="append",
        type=_route,
        default=[_route(r.strip()) for r in env_routes],
        metavar="NAME=URL",
        help="inbound calls to SIP user or number NAME run the SWML at URL (repeatable)",
    )
    serve.add_argument("--trunk", default=_env("TRUNK"), metavar="SIP-URI")
    serve.add_argument(
        "--max-connections",
        default=int(_env("MAX_CONNECTIONS", "1000") or 1000),
        type=int,
        metavar="N",
        help="concurrent HTTP connections (at most half the descriptor limit); more close the "
        "longest-idle ones",
    )
    serve.add_argument(
        "--private-targets",
        default=_env("PRIVATE_TARGETS", "allow"),
        choices=["allow", "deny"],
        help="deny: URLs, taps and dialled sip: URIs may only reach public addresses (use it "
        "when callers are not trusted; see README 'Exposing callplane')",
    )
    serve.add_argument("--tls-cert", default=_env("TLS_CERT"), type=Path, metavar="FILE")
    serve.add_argument("--tls-key", default=_env("TLS_KEY"), type=Path, metavar="FILE")
    serve.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    return parser


def _load_or_create_credentials(config: object) -> None:
    """Keep generated credentials in the data directory so a restart keeps the same ones."""
    from callplane.server import ServerConfig

    assert isinstance(config, ServerConfig)
    path = config.data_dir / "credentials.json"
    if not config.project and not config.token and path.exists():
        saved = json.loads(path.read_text())
        config.project, config.token = saved["project"], saved["token"]
        print(f"callplane: project {config.project}  token {config.token}  (from {path})")
        return
    if config.fill_credentials():
        config.data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"project": config.project, "token": config.token}))
        path.chmod(0o600)
        print(f"callplane: generated project {config.project}  token {config.token}  ({path})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together (HTTPS needs both)")
    if args.private_targets not in ("allow", "deny"):  # a bad CALLPLANE_PRIVATE_TARGETS
        parser.error(f"--private-targets must be allow or deny, got {args.private_targets!r}")
    from callplane.server import ServerConfig, serve

    http_host, http_port = _hostport(args.http, 8080)
    sip_host, sip_port = _hostport(args.sip, 5060)
    config = ServerConfig(
        http_host=http_host,
        http_port=http_port,
        sip_host=sip_host,
        sip_port=sip_port,
        rtp_ports=args.rtp_ports,
        data_dir=args.data,
        project=args.project,
        token=args.token,
        routes=dict(args.route),
        trunk=args.trunk,
        log_level=args.log_level,
        max_connections=args.max_connections,
        private_targets=args.private_targets,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _load_or_create_credentials(config)
    sys.stdout.flush()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
