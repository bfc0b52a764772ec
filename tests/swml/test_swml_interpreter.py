"""Flow control, delegation to the host, outcomes, loop guards and cancellation."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from swml_testkit import CALL, RecordingHost, main, run_script

from callplane.engine.swml import SwmlError, SwmlInterpreter

# --------------------------------------------------------------------------- delegation, vars


async def test_call_methods_are_delegated_with_expanded_params() -> None:
    doc = main(
        {"answer": {}},
        {"set": {"greeting": "Hello", "who": "${call.from}"}},
        {"play": {"url": "say:${greeting} ${who} from %{envs.region}"}},
        {"prompt": {"play": "say:Press 1", "max_digits": 1}},
        {"play": {"url": "say:you pressed ${prompt_value} (${prompt_result})"}},
        {"hangup": {"reason": "busy"}},
        {"play": {"url": "say:never"}},
    )
    host = RecordingHost({"prompt": {"prompt_result": "match_digits", "prompt_value": "1"}})
    outcome, host, interp = await run_script(doc, host, envs={"region": "eu"})
    assert outcome.kind == "hangup"
    assert host.names == ["answer", "play", "prompt", "play", "hangup"]
    assert host.calls[1][1] == {"url": "say:Hello +15551230000 from eu"}
    assert host.calls[3][1] == {"url": "say:you pressed 1 (match_digits)"}
    assert host.calls[4][1] == {"reason": "busy"}
    assert outcome.vars["prompt_value"] == "1"
    assert interp.vars["greeting"] == "Hello"


async def test_completed_when_running_off_the_end() -> None:
    outcome, host, _ = await run_script(main({"answer": {}}))
    assert outcome.kind == "completed"
    assert host.names == ["answer"]


async def test_initial_vars_params_envs_and_call_scope() -> None:
    doc = main({"play": {"url": "say:${vars.a}/${params.p}/${envs.e}/${call.headers[0].value}"}})
    outcome, host, _ = await run_script(doc, vars={"a": "A"}, params={"p": "P"}, envs={"e": "E"})
    assert host.calls[0][1]["url"] == "say:A/P/E/acme"
    assert outcome.kind == "completed"


async def test_set_is_sequential_and_unset_removes() -> None:
    doc = main(
        {"set": {"a": 1, "b": "${a + 1}", "obj": {"k": "${b}"}, "gone": "x", "gone2": "y"}},
        {"unset": "gone"},
        {"unset": ["gone2", "never-set"]},
    )
    outcome, _, _ = await run_script(doc)
    assert outcome.vars == {"a": 1, "b": 2, "obj": {"k": 2}}


async def test_swaig_and_inline_confirm_are_not_expanded() -> None:
    doc = main(
        {
            "ai": {
                "prompt": {"text": "You talk to ${call.from}"},
                "SWAIG": {"functions": [{"data_map": {"output": {"response": "${args.city}"}}}]},
            }
        },
        {"connect": {"to": "+15550001111", "confirm": [{"play": {"url": "say:${x}"}}]}},
    )
    _, host, _ = await run_script(doc)
    ai = host.params_of("ai")[0]
    assert ai["prompt"]["text"] == "You talk to +15551230000"
    assert ai["SWAIG"]["functions"][0]["data_map"]["output"]["response"] == "${args.city}"
    assert host.params_of("connect")[0]["confirm"] == [{"play": {"url": "say:${x}"}}]


async def test_global_data_placeholders_are_left_to_the_ai_agent() -> None:
    doc = main(
        {"set": {"n": 2}},
        {"ai": {"prompt": {"text": "${n} for ${global_data.name}, %{ global_data.x[0] }"}}},
        {"play": {"url": "say:${global_data.name}${n}"}},
    )
    _, host, _ = await run_script(doc)
    assert (
        host.params_of("ai")[0]["prompt"]["text"]
        == "2 for ${global_data.name}, ${ global_data.x[0] }"
    )
    assert host.params_of("play")[0]["url"] == "say:2"  # not an AI method: expanded as ever


async def test_connect_result_switch_runs_in_interpreter() -> None:
    doc = main(
        {
            "connect": {
                "to": "+15550001111",
                "result": {
                    "case": {"connected": [{"set": {"branch": "ok"}}]},
                    "default": [{"set": {"branch": "failed:${connect_failed_reason}"}}],
                },
            }
        },
    )
    host = RecordingHost({"connect": {"connect_result": "failed", "connect_failed_reason": "busy"}})
    outcome, host, _ = await run_script(doc, host)
    assert "result" not in host.params_of("connect")[0]
    assert outcome.vars["branch"] == "failed:busy"


# --------------------------------------------------------------------------- goto / label


async def test_goto_loop_with_when_and_counter() -> None:
    doc = main(
        {"set": {"i": 0}},
        {"label": "loop"},
        {"play": {"url": "say:${i}"}},
        {"set": {"i": "${i + 1}"}},
        {"goto": {"label": "loop", "when": "i < 3"}},
        {"play": {"url": "say:done"}},
    )
    outcome, host, _ = await run_script(doc)
    assert [p["url"] for _, p in host.calls] == ["say:0", "say:1", "say:2", "say:done"]
    assert outcome.kind == "completed"


async def test_goto_max_caps_jumps() -> None:
    doc = main(
        {"label": "again"},
        {"play": {"url": "say:x"}},
        {"goto": {"label": "again", "max": 3}},
        {"hangup": {}},
    )
    outcome, host, _ = await run_script(doc)
    assert host.names == ["play"] * 4 + ["hangup"]
    assert outcome.kind == "hangup"


async def test_goto_default_max_is_100() -> None:
    doc = main({"label": "l"}, {"set": {"n": "${(n || 0) + 1}"}}, {"goto": {"label": "l"}})
    outcome, _, _ = await run_script(doc)
    assert outcome.vars["n"] == 101


async def test_goto_from_nested_block_jumps_in_section() -> None:
    doc = main(
        {"set": {"n": 0}},
        {"label": "top"},
        {"set": {"n": "${n + 1}"}},
        {"cond": [{"when": "n < 2", "then": [{"goto": {"label": "top"}}]}]},
        {"play": {"url": "say:${n}"}},
    )
    _, host, _ = await run_script(doc)
    assert host.calls == [("play", {"url": "say:2"})]


async def test_goto_unknown_label_is_an_error() -> None:
    outcome, _, _ = await run_script(main({"goto": {"label": "nowhere"}}))
    assert outcome.kind == "error"
    assert outcome.path == "sections.main[0].goto"
    assert "no label 'nowhere'" in (outcome.error or "")


async def test_goto_only_sees_labels_of_its_section() -> None:
    doc = main({"execute": {"dest": "sub"}}, label_sec=[], sub=[{"goto": {"label": "here"}}])
    doc["sections"]["main"].insert(0, {"label": "here"})
    outcome, _, _ = await run_script(doc)
    assert outcome.kind == "error"
    assert outcome.path == "sections.sub[0].goto"


# --------------------------------------------------------------------------- switch / cond


@pytest.mark.parametrize(
    ("value", "branch"),
    [("1", "one"), (1, "one"), ("2", "two"), ("9", "other"), (None, "other")],
)
async def test_switch(value: Any, branch: str) -> None:
    doc = main(
        {
            "switch": {
                "variable": "choice",
                "case": {"1": [{"set": {"b": "one"}}], "2": [{"set": {"b": "two"}}]},
                "default": [{"set": {"b": "other"}}],
            }
        }
    )
    outcome, _, _ = await run_script(doc, vars={"choice": value})
    assert outcome.vars["b"] == branch


async def test_switch_on_paths_and_expressions() -> None:
    doc = main(
        {"switch": {"variable": "call.type", "case": {"phone": [{"set": {"a": 1}}]}}},
        {
            "switch": {
                "variable": "${call.from.substring(0, 2)}",
                "case": {"+1": [{"set": {"b": 1}}]},
            }
        },
        {"switch": {"variable": "nothing", "case": {"x": [{"set": {"c": 1}}]}}},
    )
    outcome, _, _ = await run_script(doc)
    assert outcome.vars == {"a": 1, "b": 1}


@pytest.mark.parametrize(
    ("n", "branch"),
    [(1, "small"), (5, "medium"), (50, "large")],
)
async def test_cond_chain(n: int, branch: str) -> None:
    doc = main(
        {
            "cond": [
                {"when": "n < 3", "then": [{"set": {"b": "small"}}]},
                {"when": "vars.n < 10", "then": [{"set": {"b": "medium"}}]},
                {"else": [{"set": {"b": "large"}}]},
            ]
        },
        {"set": {"after": True}},
    )
    outcome, _, _ = await run_script(doc, vars={"n": n})
    assert outcome.vars["b"] == branch
    assert outcome.vars["after"] is True


async def test_cond_single_item_else_and_no_match() -> None:
    doc = main(
        {
            "cond": {
                "when": "call.from == '+1'",
                "then": [{"set": {"a": 1}}],
                "else": [{"set": {"a": 2}}],
            }
        },
        {"cond": [{"when": "false", "then": [{"set": {"b": 1}}]}]},
    )
    outcome, _, _ = await run_script(doc)
    assert outcome.vars == {"a": 2}


async def test_bad_condition_fails_with_path() -> None:
    doc = main({"cond": [{"when": "x ==", "then": []}]})
    outcome, _, _ = await run_script(doc)
    assert outcome.kind == "error"
    assert outcome.path == "sections.main[0].cond"
    assert "incomplete expression" in (outcome.error or "")


# --------------------------------------------------------------------------- execute / return


async def test_execute_section_with_params_and_return_value() -> None:
    doc = main(
        {"execute": {"dest": "add", "params": {"a": 2, "b": "${vars.three}"}}},
        {"play": {"url": "say:${return_value}"}},
        {"execute": {"dest": "pair"}},
        {"play": {"url": "say:${return_value[1].b}"}},
        add=[{"return": "${params.a + params.b}"}],
        pair=[{"return": [{"a": 1}, {"b": 2}]}],
    )
    outcome, host, _ = await run_script(doc, vars={"three": 3})
    assert [p["url"] for _, p in host.calls] == ["say:5", "say:2"]
    assert outcome.kind == "completed"


async def test_execute_params_are_scoped_to_the_callee() -> None:
    doc = main(
        {"execute": {"dest": "sub", "params": {"p": "inner"}}},
        {"play": {"url": "say:[${params.p}]"}},
        sub=[{"play": {"url": "say:[${params.p}]"}}],
    )
    _, host, _ = await run_script(doc, params={"p": "outer"})
    assert [p["url"] for _, p in host.calls] == ["say:[inner]", "say:[outer]"]


async def test_return_from_nested_block_and_without_value() -> None:
    doc = main(
        {"set": {"return_value": "stale"}},
        {"execute": {"dest": "sub"}},
        {"set": {"after_sub": "${return_value}"}},
        {"execute": {"dest": "noval"}},
        {"set": {"after_noval": "${return_value}"}},
        sub=[
            {"cond": [{"when": "true", "then": [{"return": "early"}]}]},
            {"play": {"url": "say:unreachable"}},
        ],
        noval=[{"return": {}}],
    )
    outcome, host, _ = await run_script(doc)
    assert host.calls == []
    assert outcome.vars["after_sub"] == "early"
    assert outcome.vars["after_noval"] == ""


async def test_execute_running_off_end_clears_return_value() -> None:
    doc = main(
        {"set": {"return_value": "stale"}},
        {"execute": {"dest": "sub"}},
        sub=[{"set": {"x": 1}}],
    )
    outcome, _, _ = await run_script(doc)
    assert "return_value" not in outcome.vars
    assert outcome.vars["x"] == 1


async def test_execute_on_return_and_result_switch_and_cond() -> None:
    doc = main(
        {
            "execute": {
                "dest": "sub",
                "on_return": [{"play": {"url": "say:got ${return_value}"}}],
                "result": {
                    "case": {"yes": [{"set": {"switch_branch": "yes"}}]},
                    "default": [{"set": {"switch_branch": "default"}}],
                },
            }
        },
        {
            "execute": {
                "dest": "sub",
                "result": [
                    {"when": "return_value == 'no'", "then": [{"set": {"cond_branch": "no"}}]},
                    {"else": [{"set": {"cond_branch": "else"}}]},
                ],
            }
        },
        sub=[{"return": "yes"}],
    )
    outcome, host, _ = await run_script(doc)
    assert host.calls == [("play", {"url": "say:got yes"})]
    assert outcome.vars["switch_branch"] == "yes"
    assert outcome.vars["cond_branch"] == "else"


async def test_execute_inline_json_document() -> None:
    inline = json.dumps(
        {"sections": {"main": [{"play": {"url": "say:${params.word}"}}, {"return": 7}]}}
    )
    doc = main(
        {"execute": {"dest": inline, "params": {"word": "inline"}}},
        {"set": {"r": "${return_value}"}},
    )
    outcome, host, _ = await run_script(doc)
    assert host.calls == [("play", {"url": "say:inline"})]
    assert outcome.vars["r"] == 7


async def test_execute_unknown_section_is_an_error() -> None:
    outcome, _, _ = await run_script(main({"execute": {"dest": "missing"}}))
    assert outcome.kind == "error"
    assert "'missing' is not a section" in (outcome.error or "")


async def test_execute_depth_limit() -> None:
    doc = main({"execute": {"dest": "rec"}}, rec=[{"execute": {"dest": "rec"}}])
    outcome, _, _ = await run_script(doc, max_depth=10)
    assert outcome.kind == "error"
    assert "deeper than 10 levels" in (outcome.error or "")


async def test_top_level_return_ends_script() -> None:
    doc = main(
        {"play": {"url": "say:a"}}, {"return": {"code": "${call.to}"}}, {"play": {"url": "say:b"}}
    )
    outcome, host, _ = await run_script(doc)
    assert outcome.kind == "returned"
    assert outcome.return_value == {"code": "+15559870000"}
    assert host.names == ["play"]


async def test_hangup_inside_subroutine_ends_everything() -> None:
    doc = main({"execute": {"dest": "sub"}}, {"play": {"url": "say:no"}}, sub=[{"hangup": {}}])
    outcome, host, _ = await run_script(doc)
    assert outcome.kind == "hangup"
    assert host.names == ["hangup"]


# --------------------------------------------------------------------------- transfer


async def test_transfer_to_section_replaces_script_and_keeps_vars() -> None:
    doc = main(
        {"set": {"kept": "yes"}},
        {"execute": {"dest": "sub"}},
        {"play": {"url": "say:never"}},
        sub=[{"transfer": {"dest": "other", "params": {"p": 1}}}, {"play": {"url": "say:no"}}],
        other=[{"play": {"url": "say:${kept} ${params.p}"}}],
    )
    outcome, host, _ = await run_script(doc)
    assert host.calls == [("play", {"url": "say:yes 1"})]
    assert outcome.kind == "completed"


async def test_transfer_relay_destination_is_unsupported() -> None:
    outcome, _, _ = await run_script(main({"transfer": {"dest": "relay:app"}}))
    assert outcome.kind == "error"
    assert "not supported by callplane yet" in (outcome.error or "")


# --------------------------------------------------------------------------- errors and guards


async def test_unknown_method_fails_with_log_line(caplog: pytest.LogCaptureFixture) -> None:
    doc = main({"answer": {}}, {"frobnicate": {"x": 1}}, {"hangup": {}})
    with caplog.at_level(logging.WARNING, logger="callplane.engine.swml"):
        outcome, host, _ = await run_script(doc)
    assert outcome.kind == "error"
    assert outcome.method == "frobnicate"
    assert outcome.path == "sections.main[1].frobnicate"
    assert host.names == ["answer"]
    assert any(
        "SWML method frobnicate is not supported by callplane yet" in r.getMessage()
        and r.levelno == logging.WARNING
        for r in caplog.records
    )


async def test_host_unsupported_method(caplog: pytest.LogCaptureFixture) -> None:
    doc = main({"pay": {"payment_connector_url": "https://pay.example"}}, {"hangup": {}})
    host = RecordingHost(unsupported={"pay"})
    with caplog.at_level(logging.WARNING, logger="callplane.engine.swml"):
        outcome, host, _ = await run_script(doc, host)
    assert outcome.kind == "error"
    assert outcome.method == "pay"
    assert (
        outcome.error == "sections.main[0].pay: SWML method pay is not supported by callplane yet"
    )
    assert host.names == ["pay"]
    assert "SWML method pay is not supported by callplane yet" in caplog.text


async def test_host_exception_ends_with_error(caplog: pytest.LogCaptureFixture) -> None:
    def boom(params: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("media exploded")

    host = RecordingHost({"play": boom})
    with caplog.at_level(logging.ERROR, logger="callplane.engine.swml"):
        outcome, _, _ = await run_script(main({"play": {"url": "say:x"}}), host)
    assert outcome.kind == "error"
    assert "media exploded" in (outcome.error or "")


async def test_step_budget_stops_runaway_loops() -> None:
    # Each goto is capped at 100, but nested loops multiply: 100 * 100 * 100 steps.
    doc = main(
        {"label": "a"},
        {"execute": {"dest": "inner"}},
        {"goto": {"label": "a"}},
        inner=[{"label": "b"}, {"execute": {"dest": "innermost"}}, {"goto": {"label": "b"}}],
        innermost=[{"label": "c"}, {"goto": {"label": "c"}}],
    )
    outcome, _, _ = await run_script(doc, max_steps=5000)
    assert outcome.kind == "error"
    assert "more than 5000 methods" in (outcome.error or "")


async def test_runtime_type_errors_after_expansion() -> None:
    outcome, _, _ = await run_script(main({"sleep": "${vars.ms}"}), vars={"ms": "soon"})
    assert outcome.kind == "error"
    assert outcome.path == "sections.main[0].sleep"


def test_invalid_document_rejected_at_construction() -> None:
    with pytest.raises(SwmlError) as info:
        SwmlInterpreter({"sections": {"main": [{"play": {}}]}}, RecordingHost(), call=CALL)
    assert info.value.path == "sections.main[0].play"


async def test_run_only_once() -> None:
    interp = SwmlInterpreter(main(), RecordingHost(), call=CALL)
    assert (await interp.run()).kind == "completed"
    with pytest.raises(RuntimeError):
        await interp.run()


# --------------------------------------------------------------------------- sleep, cancellation


async def test_sleep_forms() -> None:
    doc = main({"sleep": 10}, {"sleep": {"duration": "${ms}"}}, {"play": {"url": "say:x"}})
    loop = asyncio.get_running_loop()
    start = loop.time()
    outcome, host, _ = await run_script(doc, vars={"ms": 20})
    assert loop.time() - start >= 0.03
    assert outcome.kind == "completed" and host.names == ["play"]


async def test_cancellation_mid_sleep_forever() -> None:
    host = RecordingHost()
    interp = SwmlInterpreter(main({"answer": {}}, {"sleep": -1}, {"hangup": {}}), host, call=CALL)
    task = asyncio.create_task(interp.run())
    await asyncio.wait_for(host.started.wait(), 2)
    await asyncio.sleep(0.05)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert host.names == ["answer"]
    assert not interp.running


async def test_replace_mid_sleep_runs_new_document_with_same_vars() -> None:
    host = RecordingHost()
    interp = SwmlInterpreter(
        main({"set": {"who": "first"}}, {"answer": {}}, {"sleep": {"duration": -1}}),
        host,
        call=CALL,
    )
    task = asyncio.create_task(interp.run())
    await asyncio.wait_for(host.started.wait(), 2)
    await asyncio.sleep(0.02)
    replaced = await interp.replace(
        {"sections": {"main": [{"play": {"url": "say:${who} ${params.x}"}}, {"hangup": {}}]}},
        params={"x": "again"},
    )
    assert replaced
    outcome = await asyncio.wait_for(task, 2)
    assert outcome.kind == "hangup"
    assert host.calls[1:] == [("play", {"url": "say:first again"}), ("hangup", {})]


async def test_replace_cancels_host_method_in_flight() -> None:
    host = RecordingHost(delays={"play": 30})
    interp = SwmlInterpreter(
        main({"play": {"url": "say:long"}}, {"play": {"url": "say:next"}}), host, call=CALL
    )
    task = asyncio.create_task(interp.run())
    await asyncio.wait_for(host.started.wait(), 2)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await interp.replace(main({"answer": {}}))
    # replace() returns only once the old method has been cancelled.
    assert host.cancelled == ["play"]
    outcome = await asyncio.wait_for(task, 2)
    assert loop.time() - start < 1
    assert outcome.kind == "completed"
    assert host.names == ["play", "answer"]


async def test_replace_after_finish_returns_false_and_invalid_replace_keeps_running() -> None:
    host = RecordingHost()
    interp = SwmlInterpreter(main({"sleep": 50}), host, call=CALL)
    task = asyncio.create_task(interp.run())
    await asyncio.sleep(0.01)
    with pytest.raises(SwmlError):
        await interp.replace({"sections": {}})
    assert (await task).kind == "completed"
    assert not await interp.replace(main({"answer": {}}))


async def test_replace_before_run_swaps_document() -> None:
    host = RecordingHost()
    interp = SwmlInterpreter(main({"play": {"url": "say:old"}}), host, call=CALL)
    assert await interp.replace(main({"play": {"url": "say:new"}}))
    await interp.run()
    assert host.calls == [("play", {"url": "say:new"})]
