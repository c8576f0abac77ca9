"""flaxchat.evals: nanochat's evaluation.

core        the CORE metric over the DCLM eval bundle (bundle: its layout and download)
chat_eval   categorical / generative / loss evaluation of chat tasks, ChatCORE
tasks       the task loaders shared with SFT and RL (MMLU, ARC, GSM8K, HumanEval, SpellingBee, ...)
bpb         bits per byte
suite       the named tasks of apps/eval and their outcomes; report writes eval.json / eval.md
"""
