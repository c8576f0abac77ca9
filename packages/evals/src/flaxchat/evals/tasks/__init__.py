"""Chat tasks: conversations to train on and to evaluate (see common.py for the Task interface)."""

from flaxchat.evals.errors import DataUnavailable, TaskDataError, TaskError
from flaxchat.evals.tasks.arc import ARC
from flaxchat.evals.tasks.arithmetic import ArithmeticWordProblems
from flaxchat.evals.tasks.common import MultipleChoiceTask, Task, TaskMixture, TaskSequence, final_answer, render_mc
from flaxchat.evals.tasks.conversations import ConversationTask, CustomJSON, SmolTalk, write_conversations
from flaxchat.evals.tasks.gsm8k import GSM8K, solution_parts
from flaxchat.evals.tasks.humaneval import HumanEval
from flaxchat.evals.tasks.identity import IdentityConversations, identity_conversations
from flaxchat.evals.tasks.mmlu import MMLU
from flaxchat.evals.tasks.spelling import SimpleSpelling, SpellingBee

__all__ = [
    "ARC",
    "GSM8K",
    "MMLU",
    "ArithmeticWordProblems",
    "ConversationTask",
    "CustomJSON",
    "DataUnavailable",
    "HumanEval",
    "IdentityConversations",
    "MultipleChoiceTask",
    "SimpleSpelling",
    "SmolTalk",
    "SpellingBee",
    "Task",
    "TaskDataError",
    "TaskError",
    "TaskMixture",
    "TaskSequence",
    "final_answer",
    "identity_conversations",
    "render_mc",
    "solution_parts",
    "write_conversations",
]
