"""The Nash bargaining solution used by NAMEx to weight its experts."""

from .solver import NashSolution, first_order_residual, nash_bargaining

__all__ = ["NashSolution", "first_order_residual", "nash_bargaining"]
