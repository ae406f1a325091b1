"""Blind mode of the compare screen: Left/Right in random order, nothing that names a side before the vote.

A mixin of :class:`CompareScreen`.
"""

from __future__ import annotations

from textual.widgets import Label

SIDE_NAMES = ("A", "B")


class BlindMode:
    """Titles, column order and what may be shown, blind or not (mixed into CompareScreen)."""

    # Set by CompareScreen; declared here for the type checker.
    blind: bool
    voted: str | None
    order: list[int]

    @property
    def masked(self) -> bool:
        """A blind round before its vote."""
        return self.blind and self.voted is None

    def _shuffle(self) -> None:
        self.order = [0, 1] if self._rng.random() < 0.5 else [1, 0]

    def _show_titles(self) -> None:
        title = self.query_one("#cmp-title", Label)
        if None in self.sides:
            title.update("Compare · pick two models (Ctrl+G)")
            return
        names = [s.info.name for s in self.sides]  # type: ignore[union-attr]
        reveal = not self.blind or self.voted is not None
        for k, column in enumerate(self.columns):
            side = self.order[k]
            place = "Left" if k == 0 else "Right"
            if self.blind and not reveal:
                column.set_title(place)
            elif self.blind:
                column.set_title(f"{place} = {SIDE_NAMES[side]}: {names[side]}")
            else:
                column.set_title(f"{SIDE_NAMES[side]}: {names[side]}")
        if self.blind and not reveal:
            title.update("Blind compare · which answer is better? The names show after your vote")
        else:
            title.update("Compare · A and B answer the same prompt" + (" · blind round" if self.blind else ""))

    async def action_toggle_blind(self) -> None:
        """Blind on: a fresh conversation with the columns in random order. Blind off: names shown."""
        if self.running:
            self.notify("Still answering: Esc stops it first.", severity="warning")
            return
        self.blind = not self.blind
        await self.action_clear()
        if self.blind:
            self._shuffle()
        self._show_titles()
        self.notify("Blind mode: vote after both answers." if self.blind else "Blind mode off.")

    @property
    def holding(self) -> bool:
        """Blind and taking turns: the answers show only when both are done."""
        return self.masked and self.plan is not None and not self.plan["both_loaded"]
