"""Queues over real SIP: SWML `enter_queue`, and an agent's `connect` to `queue:<name>`.

Callers and agents are far ends (callplane's own SIP stack in the test process) that callplane
dials with a script; what each one hears is checked by frequency.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
import soundfile
from farend import FarEnd, peaks
from harness import Receiver, Server, swml
from harness import until as wait_for

from callplane import AsyncRestClient


@pytest.fixture
async def fars() -> AsyncIterator[list[FarEnd]]:
    ends = [FarEnd() for _ in range(4)]
    for far in ends:
        await far.start()
    yield ends
    for far in ends:
        await far.stop()


def tone(hz: float, seconds: float, level: float = 0.25) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    return (level * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def wav(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, samples, 8000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def queue_events(receiver: Receiver, path: str) -> list[tuple[str, int, int]]:
    return [
        (e["params"]["status"], e["params"]["position"], e["params"]["size"])
        for e in receiver.events(path, "calling.call.queue")
    ]


def top(far: FarEnd, start: float, end: float, n: int = 1) -> list[int]:
    return [round(f / 10) * 10 for f in peaks(far.audio(start, end), n)]


async def test_an_agent_takes_the_longest_waiting_caller_then_the_next(
    server: Server, receiver: Receiver, fars: list[FarEnd]
) -> None:
    caller1, caller2, agent1, agent2 = fars
    hold = receiver.serve_file("/hold.wav", wav(tone(700, 2.0)), "audio/wav")
    after = receiver.serve_file("/after.wav", wav(tone(900, 4.0)), "audio/wav")
    # What a caller does once its agent hangs up: inline SWML text, as `transfer` takes it.
    after_bridge = json.dumps(swml({"play": {"url": after}}))

    def enter(path: str) -> dict[str, object]:
        return swml(
            {
                "enter_queue": {
                    "queue_name": "support",
                    "status_url": receiver.url(path),
                    "wait_url": hold,
                    "transfer_after_bridge": after_bridge,
                }
            }
        )

    agent_script = swml({"connect": {"to": "queue:support", "status_url": receiver.url("/a")}})
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg1 = await client.calling.dial(from_="+15551230001", to=caller1.uri, swml=enter("/q1"))
        await wait_for(lambda: queue_events(receiver, "/q1"), 10, "caller 1 enqueued")
        leg2 = await client.calling.dial(from_="+15551230002", to=caller2.uri, swml=enter("/q2"))
        await wait_for(lambda: queue_events(receiver, "/q2"), 10, "caller 2 enqueued")
        await asyncio.sleep(0.8)
        t = time.monotonic()
        await asyncio.sleep(0.6)
        assert top(caller1, t, time.monotonic()) == [700]  # hold audio while waiting
        queues = (await asyncio.to_thread(server.get, "/api/calling/queues")).json()["data"]
        assert [(q["name"], q["size"]) for q in queues] == [("support", 2)]
        assert [c["call_id"] for c in queues[0]["callers"]] == [leg1["id"], leg2["id"]]

        agent_leg = await client.calling.dial(
            from_="+15551239999", to=agent1.uri, swml=agent_script
        )
        await wait_for(lambda: len(receiver.events("/a")) >= 2, 10, "the agent connected")
        t0 = time.monotonic()
        await asyncio.gather(caller1.play(tone(500, 1.4)), agent1.play(tone(1300, 1.4)))
        t1 = time.monotonic()
        assert top(caller1, t0 + 0.4, t1) == [1300]  # the agent, no more hold audio
        assert top(agent1, t0 + 0.4, t1) == [500]

        # The agent hangs up: caller 1 goes on with transfer_after_bridge.
        await client.calling.end(agent_leg["id"])
        await wait_for(lambda: len(receiver.events("/a")) >= 3, 10, "the agent disconnected")
        await asyncio.sleep(0.8)
        t2 = time.monotonic()
        await asyncio.sleep(0.8)
        assert top(caller1, t2, time.monotonic()) == [900]

        # A second agent takes caller 2, who is first in line now.
        await client.calling.dial(from_="+15551239998", to=agent2.uri, swml=agent_script)
        await wait_for(lambda: len(queue_events(receiver, "/q2")) >= 2, 10, "caller 2 dequeued")
        await client.calling.end(leg1["id"])
        await client.calling.end(leg2["id"])
    assert queue_events(receiver, "/q1") == [("enqueue", 1, 1), ("dequeue", 1, 1)]
    assert queue_events(receiver, "/q2") == [("enqueue", 2, 2), ("dequeue", 1, 0)]
    dequeued = receiver.events("/q1")[1]["params"]
    assert dequeued["queue_name"] == "support" and dequeued["call_id"] == leg1["id"]
    assert dequeued["agent_call_id"] == agent_leg["id"]
    connect = [e["params"] for e in receiver.events("/a")[:3]]
    assert [p["connect_state"] for p in connect] == ["connecting", "connected", "disconnected"]
    assert connect[1]["peer"]["call_id"] == leg1["id"]
    assert connect[1]["peer"]["queue_name"] == "support"
    assert connect[1]["peer"]["queue_id"] == dequeued["queue_id"]


async def test_callers_who_hang_up_or_wait_too_long_leave_the_queue(
    server: Server, receiver: Receiver, fars: list[FarEnd]
) -> None:
    caller1, caller2, agent, _ = fars
    after = receiver.serve_file("/after.wav", wav(tone(900, 4.0)), "audio/wav")
    enter = {"queue_name": "sales", "transfer_after_bridge": after}
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        await client.calling.dial(
            from_="+15551230001",
            to=caller1.uri,
            swml=swml({"enter_queue": {**enter, "status_url": receiver.url("/q1")}}),
        )
        await wait_for(lambda: queue_events(receiver, "/q1"), 10, "caller 1 enqueued")
        # Caller 2 waits at most 2 s, then its script goes on.
        await client.calling.dial(
            from_="+15551230002",
            to=caller2.uri,
            swml=swml(
                {
                    "enter_queue": {
                        **enter,
                        "status_url": receiver.url("/q2"),
                        "wait_time": 2,
                    }
                },
                {"play": {"url": after}},
            ),
        )
        await wait_for(lambda: queue_events(receiver, "/q2"), 10, "caller 2 enqueued")
        # Caller 1 abandons.
        await caller1.calls[0].bye()
        await wait_for(lambda: len(queue_events(receiver, "/q1")) == 2, 10, "caller 1 left")
        await wait_for(lambda: len(queue_events(receiver, "/q2")) == 2, 10, "caller 2 timed out")
        await asyncio.sleep(0.5)
        t = time.monotonic()
        await asyncio.sleep(0.6)
        assert top(caller2, t, time.monotonic()) == [900]
        # Nobody waits now: an agent's connect fails after its timeout.
        await client.calling.dial(
            from_="+15551239999",
            to=agent.uri,
            swml=swml(
                {
                    "connect": {
                        "to": "queue:sales",
                        "timeout": 1,
                        "status_url": receiver.url("/a"),
                    }
                }
            ),
        )
        await wait_for(lambda: len(receiver.events("/a")) == 2, 10, "the agent's connect failed")
    assert queue_events(receiver, "/q1") == [("enqueue", 1, 1), ("leave", 1, 1)]
    assert queue_events(receiver, "/q2") == [("enqueue", 2, 2), ("leave", 1, 0)]
    left = receiver.events("/q1")[1]["params"]
    assert left["reason"] == "hangup"
    assert receiver.events("/q2")[1]["params"]["reason"] == "timeout"
    failed = receiver.events("/a")[1]["params"]
    assert failed["connect_state"] == "failed" and failed["failed_reason"] == "no_answer"


# ---------------------------------------------------------------------------------------------
# Without sockets: the queue's order, positions and events.


async def test_queue_order_positions_and_events() -> None:
    from ticks import Emitted, TickSession, tick_call, tick_services

    from callplane.engine.operations.queue import Waiter, queues_of

    emitted = Emitted()
    services = tick_services(emitted, extensions={})
    queue = queues_of(services).get(services, "p", "support")
    assert queues_of(services).get(services, "p", "support") is queue
    assert queues_of(services).get(services, "other-project", "support") is not queue
    calls = [tick_call(TickSession()) for _ in range(3)]
    agent = tick_call(TickSession())
    waiters = [
        Waiter(queue, c, status_url="http://127.0.0.1/q", transfer_after_bridge="x") for c in calls
    ]
    for w in waiters:
        queue.enqueue(w)
    assert [queue.position(w) for w in waiters] == [1, 2, 3]
    queue.leave(waiters[1], "hangup")  # the middle one abandons
    assert queue.position(waiters[2]) == 2
    taken = queue.take(agent)
    assert taken is waiters[0] and await taken.taken is agent
    assert queue.position(waiters[2]) == 1
    assert waiters[1].taken.cancelled()
    assert queue.take(agent) is waiters[2] and queue.take(agent) is None
    events = [(p["status"], p["call_id"], p["position"], p["size"]) for _, p in emitted.events]
    ids = [c.id for c in calls]
    assert events == [
        ("enqueue", ids[0], 1, 1),
        ("enqueue", ids[1], 2, 2),
        ("enqueue", ids[2], 3, 3),
        ("leave", ids[1], 2, 2),
        ("dequeue", ids[0], 1, 1),
        ("dequeue", ids[2], 1, 0),
    ]
    assert all(
        p["queue_name"] == "support" and p["queue_id"] == queue.id for _, p in emitted.events
    )
    view = queues_of(services).list("p")
    assert view[0]["dequeued"] == 2 and view[0]["left"] == 1 and view[0]["size"] == 0
