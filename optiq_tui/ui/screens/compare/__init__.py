"""The compare screen: two models side by side, blind votes, and what the answers share."""

from optiq_tui.ui.screens.compare.findings import describe_turn, first_difference, swap_sides
from optiq_tui.ui.screens.compare.screen import CompareScreen

__all__ = ["CompareScreen", "describe_turn", "first_difference", "swap_sides"]
