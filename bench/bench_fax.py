"""Concurrent audio faxes through a WHOLE `callplane serve` process: CPU per fax-call-second.

    .venv/bin/python bench/bench_fax.py              # 10 senders -> 10 receivers (20 legs)
    .venv/bin/python bench/bench_fax.py --faxes 5

1. makes a 2-page PDF with Ghostscript and serves it, the receivers' SWML and the result
   callbacks from a small HTTP server on 127.0.0.1 in this process;
2. starts `callplane serve` with a local route `faxin` whose script is `receive_fax`, then dials
   --faxes calls to that route, each running `send_fax` of the PDF: every fax goes through
   callplane twice (its sending leg and its receiving leg), T.30 over PCMU on loopback;
3. waits for every leg's SWML `request` with its `*_fax_result`, and prints: how many faxes
   succeeded on both ends, pages, the fax durations (dial to result), the server's CPU over the
   run, per fax-call-second (each leg counts as one fax call) and as a share of one core.

All traffic is on 127.0.0.1; the server dies with this script and the run is bounded by
--max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from benchkit import LOOPBACK, ServerProcess, dial_all, end_all, free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
from faxdocs import fax_tools_available, make_pdf


class Site:
    """The PDF, the route's SWML, and the results the scripts post back."""

    def __init__(self, pdf: bytes) -> None:
        self.port = free_port()
        self.pdf = pdf
        self.results: dict[str, list[tuple[float, dict[str, Any]]]] = {"tx": [], "rx": []}
        self.lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, body: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(site.pdf, "application/pdf")

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/faxin":
                    self._send(json.dumps(site.receiver_swml()).encode(), "application/json")
                    return
                if self.path in ("/tx", "/rx"):
                    with site.lock:
                        site.results[self.path[1:]].append((time.monotonic(), json.loads(raw)))
                self._send(b"{}", "application/json")

        self.server = ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def report(self, path: str, prefix: str) -> dict[str, Any]:
        body = {n: "${" + f"{prefix}_{n}" + "}" for n in ("pages", "result", "result_text")}
        return {"request": {"url": self.url(path), "method": "POST", "body": body}}

    def receiver_swml(self) -> dict[str, Any]:
        main = [{"receive_fax": {}}, self.report("/rx", "receive_fax"), {"sleep": -1}]
        return {"version": "1.0.0", "sections": {"main": main}}

    def sender_swml(self) -> dict[str, Any]:
        main = [
            {"send_fax": {"document": self.url("/doc.pdf"), "header_info": "bench"}},
            self.report("/tx", "send_fax"),
            {"hangup": {}},
        ]
        return {"version": "1.0.0", "sections": {"main": main}}


async def run(args: argparse.Namespace) -> int:
    if not fax_tools_available():
        print("libspandsp2, ghostscript or libtiff-tools missing", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-fax-") as tmp:
        site = Site(make_pdf(Path(tmp)))
        server = ServerProcess(
            Path(tmp) / "server",
            rtp_ports=max(100, args.faxes * 8),
            extra_args=["--route", f"faxin={site.url('/faxin')}"],
        ).start()
        try:
            cpu0, t0 = server.cpu(), time.monotonic()
            ids, errors = await dial_all(
                server, args.faxes, lambda i: ("faxin", site.sender_swml()), args.faxes
            )
            deadline = t0 + args.max_seconds
            while time.monotonic() < deadline:
                with site.lock:
                    done = min(len(site.results["tx"]), len(site.results["rx"]))
                if done >= args.faxes:
                    break
                await asyncio.sleep(0.2)
            cpu, wall = server.cpu() - cpu0, time.monotonic() - t0
            await end_all(server, ids, 10)
        finally:
            server.stop()
            site.server.shutdown()
    tx, rx = site.results["tx"], site.results["rx"]
    ok_tx = sum(1 for _, r in tx if r["result"] == "success" and r["pages"] == "2")
    ok_rx = sum(1 for _, r in rx if r["result"] == "success" and r["pages"] == "2")
    durations = [at - t0 for at, _ in tx + rx]
    fax_call_seconds = sum(durations)
    print(f"faxes: {args.faxes} (x2 legs), dial errors: {len(errors)}")
    print(f"succeeded: send {ok_tx}/{args.faxes}, receive {ok_rx}/{args.faxes}")
    failures = {r["result_text"] for _, r in tx + rx if r["result"] != "success"}
    if failures:
        print(f"failures: {sorted(failures)}")
    if durations:
        print(
            f"fax duration s: median {statistics.median(durations):.1f},"
            f" max {max(durations):.1f} (dial to result)"
        )
    print(f"server CPU: {cpu:.2f} s over {wall:.1f} s ({100 * cpu / wall:.1f} % of one core)")
    if fax_call_seconds:
        print(f"CPU per fax-call-second: {1000 * cpu / fax_call_seconds:.2f} ms")
    return 0 if ok_tx == ok_rx == args.faxes else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faxes", type=int, default=10, help="senders (as many receivers)")
    parser.add_argument("--max-seconds", type=float, default=240.0)
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
