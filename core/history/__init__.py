"""The run history: every run recorded in SQLite (``store``) and the runs a killed process left (``recovery``)."""
