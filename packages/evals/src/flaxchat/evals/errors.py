"""Exceptions of flaxchat.evals; every message says what to do about it."""


class EvalError(Exception):
    """Base class of the evaluation errors."""


class TaskError(EvalError, ValueError):
    """A task was used wrongly: a bad argument, slice or index, or evaluate() on a loss-only task."""


class TaskDataError(EvalError):
    """A task's data is malformed (wrong columns, bad JSON, a row that breaks the format)."""


class DataUnavailable(TaskDataError):
    """A task's data is not on this machine and cannot be downloaded; the message says how to provide it."""


class CoreError(EvalError):
    """The CORE bundle or its evaluation cannot go on (bad bundle layout, impossible settings)."""


class BigBenchError(CoreError):
    """The bigbench sdist is unreadable or lacks what CORE's BIG-bench tasks need."""
