"""The export package's errors: each message says what to do."""

CONVERTER_HINT = "install the converter with `pip install 'flaxchat-export[convert]'` (in this repo: `uv sync`)"


class ExportError(ValueError):
    """A model cannot be exported with these settings, or the converter is not installed."""


class PackageError(Exception):
    """An exported model directory is missing, damaged, or its parts do not belong together."""


class GenerationError(ValueError):
    """A generation request the exported model cannot serve (empty prompt, too long, bad sampling)."""
