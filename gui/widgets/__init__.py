"""Widgets shared by several screens: plots, tables, number formatting, placeholders."""
