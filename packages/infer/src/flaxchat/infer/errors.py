"""The one exception the Engine raises for a request it cannot serve."""


class GenerationError(ValueError):
    """A generation request is invalid (bad tokens, lengths or sampling settings); the message says what to change."""
