"""The task names of apps/eval (a module of its own so the app's --help imports nothing heavy)."""

CHAT_TASK_NAMES = ("mmlu", "arc-easy", "arc-challenge", "gsm8k", "arithmetic", "humaneval", "spellingbee", "smoltalk")
TASK_NAMES = ("core", *CHAT_TASK_NAMES)
