"""Mix-minus across RTP sessions: who hears whom, batched over every group in one tick.

A :class:`MixPlan` is the clock's flattened view of every mix group: the member rows of all groups
laid end to end, group by group. Per tick the clock hands it the sessions' voices (what each leg
says: its far end's inbound audio plus its speak-direction playbacks) and gets back, for every
member, the sum of the *other* members' voices. A bridge is a group of two; a conference of a
hundred is a group of a hundred; both cost a handful of NumPy calls for all groups together, never
a Python loop per member per sample.

Pure and sans-IO: the media engine owns the groups and the sessions; this module only does the
arithmetic, so it is tested alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class MemberRow:
    """One member of a group as the clock sees it: its row in this tick's session matrix."""

    row: int
    hears: bool = True  # its outbound gets the others' voices
    speaks: bool = True  # its voice goes to the others
    # A whisper (a conference coach): its voice goes only to the member of this row, in the same
    # group, and stays out of the group's total. None: it speaks to the group as ``speaks`` says.
    heard_by: int | None = None


class MixPlan:
    """Index arrays for every group at once; rebuilt only when membership changes.

    ``tapped[i]`` keeps group ``i`` in the plan even with a single member, so that its
    :meth:`total` (what a recording of the whole room hears) exists every tick. ``index[i]`` is
    group ``i``'s position among the planned groups (None when it is not mixed: under two members
    and not tapped).
    """

    def __init__(self, groups: Sequence[Sequence[MemberRow]], tapped: Sequence[bool] = ()) -> None:
        self.index: list[int | None] = []
        kept: list[Sequence[MemberRow]] = []
        for i, g in enumerate(groups):
            if len(g) >= 2 or (i < len(tapped) and tapped[i] and g):
                self.index.append(len(kept))
                kept.append(g)
            else:
                self.index.append(None)
        groups = kept
        members = [m for g in groups for m in g]
        self.rows: npt.NDArray[np.intp] = np.array([m.row for m in members], dtype=np.intp)
        sizes = [len(g) for g in groups]
        self.starts: npt.NDArray[np.intp] = np.cumsum([0, *sizes[:-1]], dtype=np.intp)
        self.group_of: npt.NDArray[np.intp] = np.repeat(
            np.arange(len(groups), dtype=np.intp), sizes
        )
        speaks = np.array([m.speaks and m.heard_by is None for m in members], dtype=bool)
        hears = np.array([m.hears for m in members], dtype=bool)
        # Masks are applied only when some member is muted or deaf: the common bridge has none.
        self.speaks: npt.NDArray[np.int32] | None = (
            None if speaks.all() else speaks.astype(np.int32)[:, None]
        )
        self.hearing: npt.NDArray[np.intp] | None = (
            None if hears.all() else np.flatnonzero(hears).astype(np.intp)
        )
        self.position = {m.row: k for k, m in enumerate(members)}
        # (whisperer, listener) positions; whispers are rare, so a short loop per tick is fine
        # and the common plan pays nothing for them.
        whispers = [
            (k, self.position[m.heard_by])
            for k, m in enumerate(members)
            if m.heard_by is not None and m.speaks and m.heard_by in self.position
        ]
        self.whispers = whispers or None
        self.totals: npt.NDArray[np.int32] | None = None  # the last tick's per-group totals

    def __len__(self) -> int:
        return int(self.rows.size)

    def voices(
        self, inbound: npt.NDArray[np.int16], spoken: dict[int, npt.NDArray[np.int16]]
    ) -> npt.NDArray[np.int32]:
        """Each member's voice this tick: its inbound row plus what it said (speak playbacks)."""
        voice = inbound[self.rows].astype(np.int32)
        for row, frame in spoken.items():
            k = self.position.get(row)
            if k is not None:
                voice[k] += frame
        return voice

    def heard(self, voice: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
        """For every member, the sum of the other members' voices (mix-minus), plus what is
        whispered to it."""
        raw = voice
        if self.speaks is not None:
            voice = voice * self.speaks
        totals = np.add.reduceat(voice, self.starts, axis=0)
        self.totals = totals
        out: npt.NDArray[np.int32] = totals[self.group_of]
        out -= voice
        if self.whispers is not None:
            for k, to in self.whispers:
                out[to] += raw[k]
        return out

    def total(self, group: int) -> npt.NDArray[np.int16] | None:
        """The sum of every speaking member's voice in planned group ``group`` this tick
        (whispers excluded), saturated to int16: the room as a recorder hears it. None before
        the first mix."""
        if self.totals is None:
            return None
        out: npt.NDArray[np.int16] = np.clip(self.totals[group], -32768, 32767).astype(np.int16)
        return out

    def mix_into(
        self,
        mixed: npt.NDArray[np.int16],
        inbound: npt.NDArray[np.int16],
        spoken: dict[int, npt.NDArray[np.int16]],
    ) -> None:
        """Add what every hearing member hears to its row of ``mixed`` (saturating)."""
        if not self.rows.size:
            return
        heard = self.heard(self.voices(inbound, spoken))
        rows = self.rows
        if self.hearing is not None:
            rows = rows[self.hearing]
            heard = heard[self.hearing]
        heard += mixed[rows]
        np.clip(heard, -32768, 32767, out=heard)
        mixed[rows] = heard
