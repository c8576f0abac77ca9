"""The assistant's tools: the calculator the Engine calls, and the python sandbox."""

from flaxchat.infer.tools.calculator import use_calculator
from flaxchat.infer.tools.sandbox import (
    ExecutionResult,
    SandboxArgumentError,
    SandboxCapabilities,
    SandboxError,
    SandboxLimits,
    execute_code,
    sandbox_capabilities,
)

__all__ = [
    "ExecutionResult",
    "SandboxArgumentError",
    "SandboxCapabilities",
    "SandboxError",
    "SandboxLimits",
    "execute_code",
    "sandbox_capabilities",
    "use_calculator",
]
