"""Settings: one typed object parsed once from the environment and passed in."""

from config.settings import Secret, Settings, SettingsError

__all__ = ["Secret", "Settings", "SettingsError"]
