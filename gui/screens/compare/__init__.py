"""The Compare screen: teacher and student side by side, and the playground."""
