"""Generated token ids -> the text a client should see, piece by piece."""

from __future__ import annotations

from flaxchat.tokenizer import Tokenizer

REPLACEMENT = "\ufffd"


class TextAssembler:
    """Turns tokens into text deltas.

    A character split over several tokens is held until it is complete (as nanochat: while the
    decoded text ends in U+FFFD). With stop strings, text that could be the start of one is held
    until it is known not to be; on a match, the text before it is the last delta and `stopped`
    is set.
    """

    def __init__(self, tokenizer: Tokenizer, stop: list[str] | None = None):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop or [] if s]
        self.text = ""  # emitted so far
        self.stopped = False
        self._ids: list[int] = []  # tokens not decoded to complete characters yet
        self._held = ""  # decoded text that may begin a stop string

    def push(self, token: int) -> str:
        if self.stopped:
            return ""
        self._ids.append(token)
        piece = self.tokenizer.decode(self._ids)
        if piece.endswith(REPLACEMENT):
            return ""
        self._ids = []
        return self._release(self._held + piece, final=False)

    def flush(self) -> str:
        """The rest, at the end of generation (an incomplete character decodes as U+FFFD)."""
        if self.stopped:
            return ""
        piece = self.tokenizer.decode(self._ids) if self._ids else ""
        self._ids = []
        return self._release(self._held + piece, final=True)

    def _release(self, text: str, final: bool) -> str:
        self._held = ""
        hits = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            text = text[: min(hits)]
        elif not final:
            keep = max((k for s in self.stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
            text, self._held = text[: len(text) - keep], text[len(text) - keep :]
        self.text += text
        return text
