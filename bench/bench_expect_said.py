"""Accuracy of the virtual phone's `expect_said` on the project's own TTS voices.

    PYTHONPATH=src .venv/bin/python bench/bench_expect_said.py [--voices slt,rms] [--parallel 1]

For every voice and each of the PROMPTS, a real call: the phone calls a route whose SWML says the
prompt (callplane's TTS, `say_voice`), through SIP, RTP and G.711, and hangs up when the route
does. Then each prompt's key phrase is judged against what the phone heard with the decision
`expect_said` makes (`Phone.said`): the call's own phrase must match (a hit), every other prompt's
phrase must not (a false match). Prints hits and false matches per voice, and by which way they
were heard (speech recognition or match by example).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from callplane.testing.phone import Phone, PhoneRuntime
from callplane.testing.server import CallplaneServer

# (what the app says, the phrase a test would expect)
PROMPTS: list[tuple[str, str]] = [
    ("Welcome. Press one for sales, two for support.", "press one for sales"),
    ("Thank you for calling Acme Corporation.", "thank you for calling"),
    ("Please enter your account number followed by the pound key.", "enter your account number"),
    ("Your call is important to us. Please stay on the line.", "your call is important to us"),
    ("Connecting you to the sales department now.", "connecting you to the sales department"),
    ("Goodbye and have a nice day.", "have a nice day"),
    ("Press nine to repeat this menu.", "press nine to repeat this menu"),
    ("Our offices are closed. Please call again tomorrow.", "our offices are closed"),
    ("For billing questions, press three.", "for billing questions"),
    ("Please hold while we transfer your call.", "please hold while we transfer"),
    ("Your balance is forty two dollars.", "your balance is forty two dollars"),
    ("Sorry, I did not understand that.", "i did not understand"),
    ("Please say your date of birth.", "say your date of birth"),
    ("To speak with an operator, press zero.", "speak with an operator"),
    ("Your appointment is confirmed for Monday morning.", "appointment is confirmed"),
    ("We are experiencing higher than normal call volumes.", "higher than normal call volumes"),
    ("Please leave a message after the tone.", "leave a message after the tone"),
    ("The number you have dialed is not in service.", "is not in service"),
    ("Enter your four digit pin code.", "enter your four digit pin"),
    ("Your order has been shipped.", "your order has been shipped"),
    ("Press star to return to the main menu.", "return to the main menu"),
    ("This call may be recorded for quality purposes.", "this call may be recorded"),
    ("Welcome back. You have two new messages.", "you have two new messages"),
    ("Please wait while we look up your account.", "look up your account"),
    ("Your payment was received. Thank you.", "your payment was received"),
    ("To hear these options again, press pound.", "hear these options again"),
    ("All of our agents are busy right now.", "all of our agents are busy"),
    ("Please say yes or no.", "say yes or no"),
    ("Your estimated wait time is five minutes.", "estimated wait time is five minutes"),
    ("Invalid entry. Please try again.", "invalid entry"),
]


def one_call(
    runtime: PhoneRuntime, server: CallplaneServer, voice: str, index: int
) -> dict[str, Any]:
    text, _ = PROMPTS[index]
    route = f"p{index}-{voice}"
    server.add_route(route, {"version": "1.0.0", "sections": {"main": [
        {"answer": {}},
        {"play": {"url": f"say:{text}", "say_voice": voice}},
        {"play": {"url": "silence:1"}},
        {"hangup": {}},
    ]}})  # fmt: skip
    phone = Phone(runtime, server_sip=server.sip)
    try:
        phone.call(route)
        phone.expect_hangup(timeout=30)
        verdicts = {j: phone.said(expected) for j, (_, expected) in enumerate(PROMPTS)}
        return {"voice": voice, "index": index, "verdicts": verdicts, "heard": phone.transcript}
    finally:
        phone.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voices", default="slt,rms,kal,awb")
    parser.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args()
    voices = args.voices.split(",")
    started = time.monotonic()
    with CallplaneServer() as server:
        runtime = PhoneRuntime()
        try:
            with ThreadPoolExecutor(args.parallel) as pool:
                jobs = [
                    pool.submit(one_call, runtime, server, voice, i)
                    for voice in voices
                    for i in range(len(PROMPTS))
                ]
                results = [job.result() for job in jobs]
        finally:
            runtime.close()
    print(f"{len(PROMPTS)} prompts x {len(voices)} voices, {len(results)} calls, "
          f"{time.monotonic() - started:.0f} s")  # fmt: skip
    print("voice  hits        (speech / example)  false matches (of pairs)")
    for voice in voices:
        mine = [r for r in results if r["voice"] == voice]
        hits = [r["verdicts"][r["index"]] for r in mine]
        false = [
            (r["index"], j, m)
            for r in mine
            for j, m in r["verdicts"].items()
            if j != r["index"] and m.ok
        ]
        pairs = len(mine) * (len(PROMPTS) - 1)
        print(
            f"{voice:5}  {sum(m.ok for m in hits):2}/{len(hits)}  "
            f"({sum(m.by_speech for m in hits)} / {sum(m.by_example for m in hits)})"
            f"             {len(false)}/{pairs}"
        )
        for m in hits:
            if not m.ok:
                print(f"   missed {m.expected!r}: {m.describe()}")
        for i, _, m in false:
            print(f"   false: call {i} matched {m.expected!r}: {m.describe()}")


if __name__ == "__main__":
    main()
