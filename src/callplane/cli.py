"""`callplane serve`: run the server with embedded defaults; every flag has an environment twin.

`callplane projects add|list|remove`: the projects (tenants) kept in the data directory."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an address or CIDR, got {value!r}") from None


def _sip_user(value: str) -> tuple[str, str]:
    name, sep, password = value.partition(":")
    if not sep or not name.strip() or not password:
        raise argparse.ArgumentTypeError(f"expected NAME:PASSWORD, got {value!r}")
    return name.strip(), password


def _sip_rate(value: str) -> tuple[float, float]:
    """RATE or RATE/BURST new INVITEs a second per source; 0 turns the limit off."""
    rate_s, sep, burst_s = value.partition("/")
    try:
        rate = float(rate_s)
        burst = float(burst_s) if sep else max(1.0, 2 * rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RATE[/BURST], got {value!r}") from None
    if rate < 0 or burst < 1:
        raise argparse.ArgumentTypeError(f"expected RATE >= 0 and BURST >= 1, got {value!r}")
    return rate, burst


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def _env_list(name: str) -> list[str]:
    return [v.strip() for v in (_env(name, "") or "").split(",") if v.strip()]


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
    _data_argument(serve)
    serve.add_argument(
        "--project",
        default=_env("PROJECT", ""),
        metavar="ID",
        help="the default project (inbound SIP calls), by id or name; created if unknown",
    )
    serve.add_argument(
        "--token", default=_env("TOKEN", ""), metavar="TOKEN", help="the default project's token"
    )
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
        "--sip-trusted",
        action="append",
        type=_cidr,
        default=[_cidr(v) for v in _env_list("SIP_TRUSTED")],
        metavar="CIDR",
        help="sources whose INVITEs need no digest credentials (repeatable; replaces the "
        "default 127.0.0.0/8 and ::1)",
    )
    serve.add_argument(
        "--sip-user",
        action="append",
        type=_sip_user,
        default=[_sip_user(v) for v in _env_list("SIP_USERS")],
        metavar="NAME:PASSWORD",
        help="digest credentials other sources must present (repeatable); none: they get 403",
    )
    serve.add_argument(
        "--max-calls",
        type=_positive_int,
        default=_positive_int(m) if (m := _env("MAX_CALLS")) else None,
        metavar="N",
        help="concurrent calls before INVITEs get 503 (default: half the RTP range's even ports)",
    )
    serve.add_argument(
        "--sip-rate",
        type=_sip_rate,
        default=_sip_rate(_env("SIP_RATE", "20/40") or "20/40"),
        metavar="RATE[/BURST]",
        help="new INVITEs a second per source address before 503 (default 20/40; 0: no limit)",
    )
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
    serve.add_argument(
        "--llm-url",
        default=_env("LLM_URL"),
        metavar="URL",
        help="OpenAI-compatible API base for SWML ai (e.g. http://127.0.0.1:11434/v1)",
    )
    serve.add_argument("--llm-model", default=_env("LLM_MODEL"), metavar="NAME")
    serve.add_argument("--llm-key", default=_env("LLM_KEY"), metavar="KEY")
    serve.add_argument("--tls-cert", default=_env("TLS_CERT"), type=Path, metavar="FILE")
    serve.add_argument("--tls-key", default=_env("TLS_KEY"), type=Path, metavar="FILE")
    serve.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    _projects_parser(sub)
    return parser


def _data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=_env("DATA", "data"), type=Path, metavar="DIR")


def _projects_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    projects = sub.add_parser(
        "projects", help="manage projects: each has its own API token and webhook signing key"
    )
    actions = projects.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="create a project; prints its token and signing key once")
    add.add_argument("name")
    add.add_argument("--json", action="store_true", help="print the new project as JSON")
    _data_argument(add)
    listing = actions.add_parser("list", help="list projects (--json includes their secrets)")
    listing.add_argument("--json", action="store_true")
    _data_argument(listing)
    remove = actions.add_parser("remove", help="delete a project: its token stops working")
    remove.add_argument("project", metavar="ID|NAME")
    _data_argument(remove)


def _projects(args: argparse.Namespace) -> int:
    from callplane.server import open_store
    from callplane.store import import_legacy_credentials, new_project
    from callplane.store.projects import describe_new

    with open_store(args.data) as store:
        for line in import_legacy_credentials(store, args.data):
            print(line)
        if args.action == "add":
            row = new_project(args.name)
            try:
                store.add_project(row)
            except ValueError as exc:
                print(f"callplane: {exc}", file=sys.stderr)
                return 1
            print(json.dumps(_public(row)) if args.json else describe_new(row))
        elif args.action == "list":
            rows = store.list_projects()
            if args.json:
                print(json.dumps([_public(row) for row in rows]))
            else:
                for row in rows:  # no secrets on a terminal: they were shown when generated
                    print(f"{row['id']}  {row['name']}")
        else:
            found = store.find_project(args.project)
            if found is None or not store.delete_project(found["id"]):
                print(f"callplane: no project {args.project!r}", file=sys.stderr)
                return 1
            print(f"callplane: removed project {found['id']} ({found['name']})")
    return 0


def _public(row: Any) -> dict[str, str]:
    return {key: row[key] for key in ("id", "name", "token", "signing_key")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "projects":
        return _projects(args)
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
        sip_trusted=args.sip_trusted or None,
        sip_users=dict(args.sip_user),
        max_calls=args.max_calls,
        sip_rate=args.sip_rate,
        max_connections=args.max_connections,
        private_targets=args.private_targets,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        llm_url=args.llm_url,
        llm_model=args.llm_model,
        llm_key=args.llm_key,
    )
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
