"""The one error type of the data layer."""


class DataSourceError(Exception):
    """A data source is missing, unreachable or malformed; the message says what to do about it."""
