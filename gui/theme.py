"""Light and dark appearance: follow the system's colour scheme, or the person's choice (View ▸ Appearance).

Qt's Fusion style draws with the application palette.  Qt 6.5+ reports the desktop's scheme
(``QStyleHints.colorScheme``) and, where the platform theme supports it, switches the palette itself;
where it does not (many Linux desktops, Xvfb), a dark scheme would still be drawn with a light palette,
so this module builds a complete dark palette from a few colours instead.  The choice is kept in the
window settings under ``view/appearance``: "system" (the default), "light" or "dark".
"""

from __future__ import annotations

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

APPEARANCES = {"system": "Follow the system", "light": "Light", "dark": "Dark"}
SETTINGS_KEY = "view/appearance"

# (role, colour) of the dark palette: greys with enough contrast for text (WCAG AA on the window colour)
_DARK = {
    QPalette.ColorRole.Window: "#2b2b2b", QPalette.ColorRole.WindowText: "#e6e6e6",
    QPalette.ColorRole.Base: "#1e1e1e", QPalette.ColorRole.AlternateBase: "#262626",
    QPalette.ColorRole.ToolTipBase: "#3a3a3a", QPalette.ColorRole.ToolTipText: "#f0f0f0",
    QPalette.ColorRole.PlaceholderText: "#8c8c8c", QPalette.ColorRole.Text: "#e6e6e6",
    QPalette.ColorRole.Button: "#353535", QPalette.ColorRole.ButtonText: "#e6e6e6",
    QPalette.ColorRole.BrightText: "#ff6b6b", QPalette.ColorRole.Light: "#4a4a4a",
    QPalette.ColorRole.Midlight: "#3e3e3e", QPalette.ColorRole.Mid: "#2f2f2f",
    QPalette.ColorRole.Dark: "#1a1a1a", QPalette.ColorRole.Shadow: "#000000",
    QPalette.ColorRole.Highlight: "#3d7bd9", QPalette.ColorRole.HighlightedText: "#ffffff",
    QPalette.ColorRole.Link: "#6ea8fe", QPalette.ColorRole.LinkVisited: "#b392f0",
}
_DARK_DISABLED = {QPalette.ColorRole.WindowText: "#7a7a7a", QPalette.ColorRole.Text: "#7a7a7a",
                  QPalette.ColorRole.ButtonText: "#7a7a7a", QPalette.ColorRole.HighlightedText: "#9a9a9a"}


def dark_palette() -> QPalette:
    """The palette the app uses when it is dark and the platform did not provide one."""
    palette = QPalette()
    for role, colour in _DARK.items():
        palette.setColor(role, QColor(colour))
    for role, colour in _DARK_DISABLED.items():
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor(colour))
    return palette


def palette_is_dark(palette: QPalette) -> bool:
    """Whether text is drawn light on dark (the window colour is darker than its text)."""
    return palette.color(QPalette.ColorRole.Window).lightness() < palette.color(
        QPalette.ColorRole.WindowText).lightness()


def system_scheme(app: QApplication) -> str:
    """"dark" or "light": what the desktop asks for ("light" when it does not say)."""
    return "dark" if app.styleHints().colorScheme() == Qt.ColorScheme.Dark else "light"


def apply_appearance(app: QApplication, appearance: str) -> str:
    """Draw the app in ``appearance`` ("system", "light" or "dark"); returns the scheme now shown."""
    hints = app.styleHints()
    if appearance == "system":
        hints.unsetColorScheme()
        wanted = system_scheme(app)
    else:
        wanted = appearance
        hints.setColorScheme(Qt.ColorScheme.Dark if wanted == "dark" else Qt.ColorScheme.Light)
    platform = app.style().standardPalette()
    if wanted == "dark":
        app.setPalette(platform if palette_is_dark(platform) else dark_palette())
    else:
        app.setPalette(platform if not palette_is_dark(platform) else QPalette(QColor("#efefef")))
    return wanted


def saved_appearance(settings: QSettings) -> str:
    value = str(settings.value(SETTINGS_KEY, "system"))
    return value if value in APPEARANCES else "system"


def follow_system(app: QApplication, settings: QSettings) -> None:
    """Apply the saved appearance now, and again whenever the desktop's scheme changes while it is "system"."""
    apply_appearance(app, saved_appearance(settings))

    def changed(_scheme) -> None:
        if saved_appearance(settings) == "system":
            apply_appearance(app, "system")

    app.styleHints().colorSchemeChanged.connect(changed)
