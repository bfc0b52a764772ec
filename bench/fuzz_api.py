"""Fuzz `callplane serve`'s HTTP API with schemathesis and the official OpenAPI description.

    pip install -e '.[fuzz]'        # schemathesis (not part of the test extra)
    .venv/bin/python bench/fuzz_api.py                       # 300 examples an operation, 10 min max
    .venv/bin/python bench/fuzz_api.py -n 50 --max-time 120 --seed 7

It runs itself inside a private network namespace (`unshare -n`, loopback only): whatever URL,
SIP target or stream a generated command names, nothing can leave 127.0.0.1. schemathesis
generates valid and invalid requests for every `/api/calling` operation of
`calling-openapi.yaml` (default: /work/shared/reference/calling-openapi.yaml) with the
project's credentials, and checks that no response is a 5xx and that every response conforms to
the schema (status code, content type, body). Figures: its summary (operations, test cases,
failures by check), RSS of the server before and after, tracebacks in the server log.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import PROJECT, TOKEN, ServerProcess, in_private_netns

os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")]
)
SPEC = Path("/work/shared/reference/calling-openapi.yaml")
CHECKS = [
    "not_a_server_error",
    "response_schema_conformance",
    "status_code_conformance",
    "content_type_conformance",
]


def rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--spec", type=Path, default=SPEC)
    ap.add_argument("-n", "--max-examples", type=int, default=300)
    ap.add_argument("--max-time", type=int, default=600, help="seconds for the whole run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--phases",
        default="fuzzing",
        help="schemathesis phases (its `examples` phase spends minutes of CPU on this spec)",
    )
    args = ap.parse_args()
    st = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    if not Path(st).exists():
        sys.exit("schemathesis is not installed: pip install -e '.[fuzz]'")
    in_private_netns(sys.argv)
    with tempfile.TemporaryDirectory(prefix="fuzz-api-") as tmp:
        server = ServerProcess(Path(tmp)).start()
        before = rss(server.pid)
        began = time.monotonic()
        run = subprocess.run(
            [
                st,
                "run",
                str(args.spec),
                "--url",
                f"http://{server.host}",
                "--auth",
                f"{PROJECT}:{TOKEN}",
                "--include-path-regex",
                "^/api/calling",
                "--checks",
                ",".join(CHECKS),
                "--max-examples",
                str(args.max_examples),
                "--max-time",
                str(args.max_time),
                "--seed",
                str(args.seed),
                "--phases",
                args.phases,
                "--continue-on-failure",
                "--request-timeout",
                "30",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp,  # its .schemathesis cache stays out of the checkout
        )
        elapsed = time.monotonic() - began
        after = rss(server.pid)
        alive = server.proc is not None and server.proc.poll() is None
        server.stop()
        log = server.log_path.read_text(errors="replace")
        print(run.stdout[-6000:])
        if run.returncode not in (0, 1):
            print(run.stderr[-3000:])
        print(f"schemathesis exit: {run.returncode} after {elapsed:.0f} s")
        print(f"server: {'alive' if alive else 'DEAD'}")
        print(f"server tracebacks: {log.count('Traceback (most recent call last)')}")
        print(f"RSS: before {before:.1f} MB, after {after:.1f} MB ({after - before:+.1f} MB)")
        sys.exit(run.returncode if alive else 1)


if __name__ == "__main__":
    main()
