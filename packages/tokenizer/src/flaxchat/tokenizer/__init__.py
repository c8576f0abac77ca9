"""flaxchat.tokenizer: nanochat's BPE tokenizer (rustbpe training, tiktoken encoding, chat rendering)."""

from flaxchat.tokenizer.bpe import MIN_VOCAB_SIZE, Tokenizer, TokenizerTrainingError
from flaxchat.tokenizer.chat import ConversationError
from flaxchat.tokenizer.files import TokenizerFileError
from flaxchat.tokenizer.paths import base_dir, tokenizer_dir
from flaxchat.tokenizer.spec import BOS_TOKEN, SPECIAL_TOKENS, SPLIT_PATTERN
from flaxchat.tokenizer.stock import STOCK_ENCODINGS, find_stock_file

__all__ = [
    "BOS_TOKEN",
    "MIN_VOCAB_SIZE",
    "SPECIAL_TOKENS",
    "SPLIT_PATTERN",
    "STOCK_ENCODINGS",
    "ConversationError",
    "Tokenizer",
    "TokenizerFileError",
    "TokenizerTrainingError",
    "base_dir",
    "find_stock_file",
    "tokenizer_dir",
]
