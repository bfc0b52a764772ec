"""The batched mix-minus arithmetic, alone."""

from __future__ import annotations

import numpy as np

from callplane.media.mix import MemberRow, MixPlan


def frames(*values: int) -> np.ndarray:
    return np.array([[v] * 160 for v in values], dtype=np.int16)


def test_a_pair_hears_each_other() -> None:
    plan = MixPlan([[MemberRow(0), MemberRow(2)]])
    inbound = frames(100, 7, -300)
    mixed = np.zeros((3, 160), dtype=np.int16)
    plan.mix_into(mixed, inbound, {})
    assert mixed[0, 0] == -300 and mixed[2, 0] == 100 and mixed[1, 0] == 0


def test_groups_are_independent_and_mix_minus_excludes_own_voice() -> None:
    plan = MixPlan([[MemberRow(0), MemberRow(1), MemberRow(2)], [MemberRow(3), MemberRow(4)]])
    inbound = frames(1, 10, 100, 1000, 10000)
    mixed = frames(5, 0, 0, 0, 0)  # row 0 also plays something of its own
    plan.mix_into(mixed, inbound, {})
    assert list(mixed[:, 0]) == [5 + 110, 101, 11, 10000, 1000]


def test_speak_playbacks_are_part_of_the_voice_and_masks_apply() -> None:
    plan = MixPlan([[MemberRow(0), MemberRow(1, speaks=False), MemberRow(2, hears=False)]])
    inbound = frames(1, 10, 100)
    mixed = np.zeros((3, 160), dtype=np.int16)
    plan.mix_into(mixed, inbound, {0: np.full(160, 1000, dtype=np.int16)})
    # row 1 is muted: nobody hears its 10; row 2 is deaf: hears nothing.
    assert list(mixed[:, 0]) == [100, 1001 + 100, 0]


def test_saturates_instead_of_wrapping() -> None:
    plan = MixPlan([[MemberRow(0), MemberRow(1), MemberRow(2)]])
    inbound = frames(-30000, -30000, 30000)
    mixed = frames(0, 0, 5000)
    plan.mix_into(mixed, inbound, {})
    assert mixed[2, 0] == -32768  # -60000 + 5000, clipped
    assert mixed[0, 0] == 0 and mixed[1, 0] == 0


def test_single_member_groups_and_empty_plan_do_nothing() -> None:
    mixed = frames(3, 4)
    MixPlan([[MemberRow(0)]]).mix_into(mixed, frames(9, 9), {})
    MixPlan([]).mix_into(mixed, frames(9, 9), {})
    assert list(mixed[:, 0]) == [3, 4]


def test_a_whisper_is_heard_only_by_its_listener_and_stays_out_of_the_total() -> None:
    # row 3 coaches row 0: only row 0 hears its 1000; everyone else hears the room without it.
    plan = MixPlan([[MemberRow(0), MemberRow(1), MemberRow(2), MemberRow(3, heard_by=0)]])
    inbound = frames(1, 10, 100, 1000)
    mixed = np.zeros((4, 160), dtype=np.int16)
    plan.mix_into(mixed, inbound, {})
    assert list(mixed[:, 0]) == [110 + 1000, 101, 11, 111]
    total = plan.total(0)
    assert total is not None and total[0] == 111


def test_a_muted_whisperer_whispers_nothing() -> None:
    plan = MixPlan([[MemberRow(0), MemberRow(1), MemberRow(2, speaks=False, heard_by=0)]])
    mixed = np.zeros((3, 160), dtype=np.int16)
    plan.mix_into(mixed, frames(1, 10, 100), {})
    assert list(mixed[:, 0]) == [10, 1, 11]


def test_the_total_is_the_sum_of_speaking_voices_and_saturates() -> None:
    plan = MixPlan([[MemberRow(0), MemberRow(1, speaks=False)], [MemberRow(2), MemberRow(3)]])
    assert plan.total(0) is None  # nothing mixed yet
    plan.mix_into(np.zeros((4, 160), dtype=np.int16), frames(5, 7, 30000, 30000), {})
    first, second = plan.total(0), plan.total(1)
    assert first is not None and second is not None
    assert first[0] == 5 and second[0] == 32767


def test_a_tapped_single_member_group_is_planned_and_untapped_ones_are_not() -> None:
    plan = MixPlan([[MemberRow(0)], [MemberRow(1)], [MemberRow(2), MemberRow(3)]], [True])
    assert plan.index == [0, None, 1]
    mixed = frames(0, 0, 0, 0)
    plan.mix_into(mixed, frames(42, 9, 1, 2), {})
    assert list(mixed[:, 0]) == [0, 0, 2, 1]  # alone: hears nothing of itself
    total = plan.total(0)
    assert total is not None and total[0] == 42
