"""The History screen: every recorded run, the Pareto plot, and two runs side by side."""
