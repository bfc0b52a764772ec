"""Fuzz `callplane serve`'s SIP port with mutated datagrams; report tracebacks and memory.

    .venv/bin/python bench/fuzz_sip.py                  # 200,000 datagrams, seed 1
    .venv/bin/python bench/fuzz_sip.py -n 50000 --seed 7

It runs itself inside a private network namespace (`unshare -n`, loopback only), so nothing it
sends can leave 127.0.0.1. Seeds are well-formed requests and responses of every kind callplane
handles (INVITE with SDP, to a route and to nobody, ACK, BYE, CANCEL, OPTIONS, REFER, NOTIFY,
INFO, responses); each datagram is one seed with 1-4 random mutations: byte flips, inserted or
deleted runs, a header line dropped, duplicated, truncated or given a huge or binary value,
the start line or Content-Length mangled, CR/LF noise, a random-byte datagram. The server runs
with loopback trusted, no rate limit and a route to a SWML server that does not answer, so
mutated INVITEs get as deep as they can.

Figures: datagrams sent and their rate, responses received, tracebacks and ERROR lines in the
server log, whether the server stayed up (health check), and its RSS before, at the end, and
once it settles (transactions time out after 32 s).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import LOOPBACK, ServerProcess, in_private_netns

# The server runs this checkout's code, whatever is installed in the venv.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")]
)


def rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def seeds(sip_port: int, me: int) -> list[bytes]:
    here = f"{LOOPBACK}:{me}"
    there = f"{LOOPBACK}:{sip_port}"
    sdp = (
        f"v=0\r\no=- 1 1 IN IP4 {LOOPBACK}\r\ns=-\r\nc=IN IP4 {LOOPBACK}\r\nt=0 0\r\n"
        f"m=audio {me + 2} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 "
        "telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
    )

    def request(method: str, user: str, extra: str = "", body: str = "", tag: str = "") -> bytes:
        to_tag = f";tag={tag}" if tag else ""
        ctype = "Content-Type: application/sdp\r\n" if body and method == "INVITE" else ""
        return (
            f"{method} sip:{user}@{there} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {here};branch=z9hG4bKseed{method};rport\r\n"
            f'From: "Fuzz" <sip:fuzz@{here}>;tag=fz1\r\nTo: <sip:{user}@{there}>{to_tag}\r\n'
            f"Call-ID: seed-{method}@{LOOPBACK}\r\nCSeq: 1 {method}\r\n"
            f"Contact: <sip:fuzz@{here};transport=udp>\r\nMax-Forwards: 70\r\n"
            f"User-Agent: fuzz\r\n{extra}{ctype}Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode()

    response = (
        f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {there};branch=z9hG4bKnotours\r\n"
        f"From: <sip:a@{there}>;tag=x\r\nTo: <sip:b@{here}>;tag=y\r\nCall-ID: r@{LOOPBACK}\r\n"
        f"CSeq: 1 INVITE\r\nContact: <sip:b@{here}>\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    return [
        request("INVITE", "fuzzroute", body=sdp),
        request("INVITE", "nobody", body=sdp),
        request("INVITE", "fuzzroute", extra="Record-Route: <sip:p1.example;lr>\r\n", body=sdp),
        request(
            "INVITE",
            "fuzzroute",
            extra='Authorization: Digest username="a", realm="r", '
            'nonce="n", uri="sip:x", response="0123"\r\n',
            body=sdp,
        ),
        request("ACK", "fuzzroute", tag="t1"),
        request("BYE", "fuzzroute", tag="t1"),
        request("CANCEL", "fuzzroute"),
        request("OPTIONS", "fuzzroute"),
        request("INFO", "fuzzroute", tag="t1"),
        request("REFER", "fuzzroute", extra=f"Refer-To: <sip:bob@{there}>\r\n", tag="t1"),
        request(
            "NOTIFY",
            "fuzzroute",
            extra="Event: refer\r\nSubscription-State: active\r\n",
            body="SIP/2.0 200 OK\r\n",
            tag="t1",
        ),
        request("INVITE", "fuzzroute", extra="Require: 100rel\r\n", body=sdp),
        response,
    ]


NASTY = [
    b"",
    b"<",
    b'"',
    b"\x00",
    b"\xff\xfe",
    b";;;;",
    b"<sip:",
    b"A" * 5000,
    b"%00",
    b"\r\n \t",
    b"999999999999999999999",
    b"-1",
    b"sip:[::1",
    b"SIP/2.0",
    b"\r\n\r\n",
]


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(10)
        if not buf:
            buf = bytearray(rng.randbytes(rng.randint(1, 200)))
            continue
        i = rng.randrange(len(buf))
        if op == 0:  # flip bits
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif op == 1:  # insert junk
            buf[i:i] = (
                rng.choice(NASTY) if rng.random() < 0.6 else rng.randbytes(rng.randint(1, 40))
            )
        elif op == 2:  # delete a run
            del buf[i : i + rng.randint(1, 60)]
        elif op in (3, 4, 5):  # work on a header line
            lines = bytes(buf).split(b"\r\n")
            head_end = lines.index(b"") if b"" in lines else len(lines)
            if head_end <= 1:
                continue
            j = rng.randrange(1, head_end)
            if op == 3:
                del lines[j]
            elif op == 4:
                lines.insert(j, lines[j])
            else:
                name, _, value = lines[j].partition(b":")
                value = value[: rng.randrange(len(value) + 1)] + rng.choice(NASTY)
                lines[j] = name + b":" + value
            buf = bytearray(b"\r\n".join(lines))
        elif op == 6:  # start line
            first, _, rest = bytes(buf).partition(b"\r\n")
            parts = first.split(b" ")
            k = rng.randrange(len(parts))
            parts[k] = rng.choice(NASTY)
            buf = bytearray(b" ".join(parts) + b"\r\n" + rest)
        elif op == 7:  # Content-Length lies
            buf = bytearray(
                re.sub(
                    rb"Content-Length: *\d+",
                    b"Content-Length: " + str(rng.choice([0, 1, 99999, -5])).encode(),
                    bytes(buf),
                )
            )
        elif op == 8:  # line-ending noise
            buf = bytearray(bytes(buf).replace(b"\r\n", rng.choice([b"\n", b"\r", b"\r\n\r\n"]), 1))
        else:  # a whole random datagram
            buf = bytearray(rng.randbytes(rng.randint(1, 1400)))
    return bytes(buf[:65000])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=200_000, help="datagrams to send")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=4000.0, help="datagrams a second")
    ap.add_argument("--settle", type=float, default=40.0, help="seconds to wait before RSS after")
    args = ap.parse_args()
    in_private_netns(sys.argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="fuzz-sip-") as tmp:
        server = ServerProcess(
            Path(tmp),
            extra_args=[
                "--sip-rate",
                "0",
                "--max-calls",
                "200",
                "--route",
                # a SWML server that never answers: routed calls fail their fetch and end
                f"fuzzroute=http://{LOOPBACK}:9/swml",
            ],
        ).start()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((LOOPBACK, 0))
        sock.setblocking(False)
        target = (LOOPBACK, server.sip_port)
        pool = seeds(server.sip_port, sock.getsockname()[1])
        received = 0

        def drain() -> None:
            nonlocal received
            while True:
                try:
                    sock.recv(65535)
                except (BlockingIOError, ConnectionRefusedError):
                    return
                received += 1

        for good in pool:  # warm up every path once with the unmutated seeds
            sock.sendto(good, target)
        time.sleep(1.0)
        drain()
        before = rss(server.pid)
        began = time.monotonic()
        batch = 100
        for n in range(args.n):
            # EAGAIN: the kernel's buffer is full; the next batch waits
            with contextlib.suppress(OSError):
                sock.sendto(mutate(rng.choice(pool), rng), target)
            if n % batch == batch - 1:
                drain()
                ahead = (n + 1) / args.rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
        elapsed = time.monotonic() - began
        time.sleep(1.0)
        drain()
        at_end = rss(server.pid)
        settle_until = time.monotonic() + args.settle
        while time.monotonic() < settle_until and rss(server.pid) > before + 20:
            time.sleep(2)
            drain()
        settled = rss(server.pid)
        try:
            healthy = httpx.get(f"http://{server.host}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            healthy = False
        alive = server.proc is not None and server.proc.poll() is None
        server.stop()
        log = server.log_path.read_text(errors="replace")
        tracebacks = log.count("Traceback (most recent call last)")
        errors = sum(1 for line in log.splitlines() if " ERROR " in line or "ERROR:" in line)
        print(f"datagrams sent:   {args.n:,} in {elapsed:.1f} s ({args.n / elapsed:,.0f}/s)")
        print(f"responses:        {received:,}")
        print(f"server:           {'alive' if alive else 'DEAD'}, /health {healthy}")
        print(f"tracebacks:       {tracebacks} (ERROR lines {errors})")
        print(
            f"RSS:              before {before:.1f} MB, at end {at_end:.1f} MB, "
            f"settled {settled:.1f} MB ({settled - before:+.1f} MB)"
        )
        if tracebacks:
            first = log.index("Traceback (most recent call last)")
            print(log[max(0, first - 300) : first + 2500])
        sys.exit(0 if alive and healthy and not tracebacks and settled - before <= 20 else 1)


if __name__ == "__main__":
    main()
