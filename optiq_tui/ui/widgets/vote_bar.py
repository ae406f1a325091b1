"""The blind-vote bar under the compare columns."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Static

# The vote names of optiq_tui.eval.compare.VOTES, as the user reads them.
VOTES = {"left": "Left is better", "right": "Right is better", "tie": "Tie", "both-bad": "Both bad"}


class VoteBar(Static, can_focus=True):
    """Focused when both blind answers are in; one key casts the vote."""

    DEFAULT_CSS = """
    VoteBar { height: auto; padding: 0 1; background: $warning 20%; }
    VoteBar:focus { background: $warning 40%; text-style: bold; }
    """

    BINDINGS = [
        Binding("l,left", "vote('left')", "Left better"),
        Binding("r,right", "vote('right')", "Right better"),
        Binding("t", "vote('tie')", "Tie"),
        Binding("b", "vote('both-bad')", "Both bad"),
    ]

    @dataclass
    class Voted(Message):
        vote: str

    def on_mount(self) -> None:
        self.update("Vote: [b]l[/b] left better · [b]r[/b] right better · [b]t[/b] tie · [b]b[/b] both bad")

    def action_vote(self, vote: str) -> None:
        self.post_message(self.Voted(vote))
