"""Chat templates: how a list of messages becomes the prompt a text model continues.

Our text models are plain language models: they continue text. A chat request therefore becomes
a transcript in a format the model can continue, and the assistant's turn ends where the
transcript format says a turn ends (a stop string). The default is the play-script form of the
corpora genloop trains on first (``NAME:\\n speech \\n\\n``), so a Shakespeare model "answers" as
a character would. A model directory may carry its own template (``ModelDir.chat_template``); the template in
use is stated in the model card and in ``GET /v1/models/{model}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from genloop.errors import CorruptArtifact, InvalidInput, check_unicode
from genloop.models.modeldir import ModelDir

Role = Literal["system", "user", "assistant"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    content: Annotated[str, Field(max_length=100_000), BeforeValidator(check_unicode)]


def _speaker_names() -> dict[Role, str]:
    return {"system": "", "user": "USER", "assistant": "ASSISTANT"}


class ChatTemplate(BaseModel):
    """``turn`` is filled with ``{name}`` and ``{content}``; the prompt ends with ``reply``."""

    model_config = ConfigDict(extra="forbid")

    names: dict[Role, str] = Field(default_factory=_speaker_names)
    turn: str = "{name}:\n{content}\n\n"
    system: str = "{content}\n\n"  # the system message is a preface, not a speaker
    reply: str = "{name}:\n"
    stop: list[str] = Field(default_factory=lambda: ["\n\n"])

    def render(self, messages: list[ChatMessage]) -> str:
        """The transcript of ``messages`` followed by the start of the assistant's turn."""
        if not messages:
            raise InvalidInput("messages: give at least one message")
        parts = []
        for m in messages:
            if m.role == "system":
                parts.append(self.system.format(content=m.content))
            else:
                parts.append(self.turn.format(name=self.names[m.role], content=m.content))
        parts.append(self.reply.format(name=self.names["assistant"]))
        return "".join(parts)

    def render_within(self, messages: list[ChatMessage], fits: Callable[[str], bool]) -> str:
        """The rendered prompt, dropping the oldest turns (never the system message nor the last
        message) until ``fits`` accepts it: a long conversation keeps going in a short context."""
        kept = list(messages)
        prompt = self.render(kept)
        while not fits(prompt):
            turns = [i for i, m in enumerate(kept[:-1]) if m.role != "system"]
            if not turns:
                break  # the caller's length check names the problem
            del kept[turns[0]]
            prompt = self.render(kept)
        return prompt

    def describe(self) -> str:
        """Markdown for the model card."""
        example = self.render([ChatMessage(role="user", content="Hello")])
        return (f"Messages are rendered as a transcript and the model continues it; the reply "
                f"ends at {', '.join(repr(s) for s in self.stop)}. A user message `Hello` becomes:"
                f"\n\n```\n{example}\n```\n")


def load_chat_template(model_dir: ModelDir) -> ChatTemplate:
    """The model's own template (``ModelDir.chat_template``) or the default transcript template."""
    raw = model_dir.chat_template()
    if raw is None:
        return ChatTemplate()
    try:
        return ChatTemplate.model_validate(raw)
    except ValueError as e:
        raise CorruptArtifact(f"{model_dir.chat_template_file}: not a valid chat template "
                              f"({str(e).splitlines()[0]})") from None
