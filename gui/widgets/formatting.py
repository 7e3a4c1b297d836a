"""Numbers as people read them (no Qt; torch only where a caller already loaded it)."""

from __future__ import annotations


def format_count(count: int | None) -> str:
    """134515008 -> '134,515,008'."""
    return "—" if count is None else f"{count:,}"


def short_count(count: int) -> str:
    """134515008 -> '134.5 M'."""
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(count) >= limit:
            return f"{count / limit:.1f} {suffix}"
    return str(count)


def format_duration(seconds: float | None) -> str:
    """75 -> '1 min 15 s'; under a minute in whole seconds."""
    if seconds is None:
        return "—"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def device_label(name: str, free_bytes: int | None, total_bytes: int | None) -> str:
    """'NVIDIA H100 — 79.1 GB free of 85.0 GB' (call after torch is loaded: it formats via core)."""
    from core.models.model_info import human_bytes

    if free_bytes is None:
        return name
    if total_bytes:
        return f"{name} — {human_bytes(free_bytes)} free of {human_bytes(total_bytes)}"
    return f"{name} — {human_bytes(free_bytes)} free"


def format_bytes(count: float | None) -> str:
    """1536 -> '1.5 KB' (powers of 1000, like core.models.model_info.human_bytes, without importing torch)."""
    if count is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"
