"""Widgets shared by several screens: plots, tables, labels, number formatting, the techniques list."""
