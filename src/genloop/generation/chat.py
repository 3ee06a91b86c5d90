"""Chat templates: how a list of messages becomes the prompt a text model continues.

Our text models are plain language models: they continue text. A chat request therefore becomes
a transcript in a format the model can continue, and the assistant's turn ends where the
transcript format says a turn ends (a stop string). The default is the play-script form of the
corpora genloop trains on first (``NAME:\\n speech \\n\\n``), so a Shakespeare model "answers" as
a character would. A model directory may carry its own template (``ModelDir.chat_template``); the template in
use is stated in the model card and in ``GET /v1/models/{model}``.
"""

from __future__ import annotations

import json
import string
from collections import deque
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from genloop.errors import CorruptArtifact, InvalidInput, check_unicode
from genloop.generation.content_parts import IMAGE_PART, image_part_bytes, split_image_parts
from genloop.models.modeldir import ModelDir
from genloop.safety.moderator import ContentBlocked, Moderator

Role = Literal["system", "user", "assistant"]
# OpenAI's roles: "developer" is its newer name for "system"; "tool" (a tool call's result) and
# "function" are refused, since no genloop model calls tools
MessageRole = Literal["system", "developer", "user", "assistant", "tool", "function"]


def unsupported(feature: str) -> PydanticCustomError:
    """The validation error of an OpenAI feature a plain language model cannot honour."""
    return PydanticCustomError("unsupported", "this model does not support {feature}",
                               {"feature": feature})


TEXT_PART = "text"  # OpenAI's content part type (not genloop's data kind of that name)
_CONTENT_SCHEMA = {"anyOf": [
    {"type": "string", "maxLength": 100_000},
    {"type": "array", "description": "text parts, joined with newlines; image parts (a data: URL, "
     "never a remote one) for a captioner", "items": {"anyOf": [
         {"type": "object", "required": ["type", "text"], "additionalProperties": False,
          "properties": {"type": {"const": "text"}, "text": {"type": "string"}}},
         {"type": "object", "required": ["type", "image_url"], "additionalProperties": False,
          "properties": {"type": {"const": "image_url"}, "image_url": {
              "type": "object", "required": ["url"], "additionalProperties": False,
              "properties": {"url": {"type": "string", "pattern": "^data:image/"},
                             "detail": {"enum": ["auto", "low", "high"]}}}}}]}}]}


def _joined_text_parts(content: Any) -> Any:
    """OpenAI's content as a list of parts: the text parts joined with newlines (what the model
    reads); image parts are checked (a data: URL, never a remote one) and left out (a
    captioner reads them: ``ChatMessage.images``); any other part (audio, a file) is refused."""
    if not isinstance(content, list):
        return content
    texts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise ValueError("content parts are objects with a type")
        if part["type"] == IMAGE_PART:  # checked here (its error names the content), kept apart
            try:
                image_part_bytes(part)
            except ValueError as e:
                raise ValueError(f"part {i} (image_url): {e}") from None
            continue
        if part["type"] != TEXT_PART:
            raise unsupported(f"{part['type']} content parts")
        if set(part) - {"type", "text"} or not isinstance(part.get("text"), str):
            raise ValueError('a text part is {"type": "text", "text": "..."}')
        check_unicode(part["text"])
        texts.append(part["text"])
    return "\n".join(texts)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: MessageRole
    # a string, or OpenAI's list of text parts (joined); the limit is on the joined text
    content: Annotated[str, Field(max_length=100_000), BeforeValidator(check_unicode),
                       BeforeValidator(_joined_text_parts), WithJsonSchema(_CONTENT_SCHEMA)]
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$",
                             description="the speaker's name in the transcript")

    # the rest of a tool exchange: refused by the role, or when not empty
    tool_call_id: str | None = Field(None, description="only on tool messages, which are refused")
    tool_calls: list[Any] | None = Field(None, description="refused unless empty: no tools")
    _images: list[bytes] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _image_parts(cls, data: Any, handler: ModelWrapValidatorHandler[ChatMessage]) -> ChatMessage:
        """Image content parts are taken out of the content (which is then its text parts) and
        kept as their images' bytes (``images``): only a captioner reads them."""
        message = handler(data)  # the content's validator has checked the image parts
        if isinstance(data, dict) and isinstance(data.get("content"), list):
            message._images = split_image_parts(data["content"])[1]
        return message

    @property
    def images(self) -> list[bytes]:
        """The images of the message's ``image_url`` parts (data: URLs), in order."""
        return self._images

    @field_validator("role")
    @classmethod
    def _renderable(cls, role: str) -> str:
        if role in ("tool", "function"):
            raise unsupported(f"{role} messages (it calls no tools)")
        return role

    @field_validator("tool_calls")
    @classmethod
    def _no_tool_calls(cls, calls: list[Any] | None) -> list[Any] | None:
        if calls:
            raise unsupported("tool_calls (it calls no tools)")
        return calls

    @property
    def speaker(self) -> Role:
        """The template's role this message is rendered as ("developer" is "system")."""
        return "system" if self.role == "developer" else self.role  # type: ignore[return-value]


def _speaker_names() -> dict[Role, str]:
    return {"system": "", "user": "USER", "assistant": "ASSISTANT"}


class ChatTemplate(BaseModel):
    """``turn`` is filled with ``{name}`` and ``{content}``; the prompt ends with ``reply``.

    An imported model's own template is ``jinja`` (Hugging Face's chat template language, rendered
    by transformers' renderer with ``add_generation_prompt``; ``tokens`` are its variables, e.g.
    ``bos_token``): then ``names``, ``turn``, ``system`` and ``reply`` are unused."""

    model_config = ConfigDict(extra="forbid")

    jinja: str | None = Field(None, max_length=200_000, description="a Hugging Face chat template")
    tokens: dict[str, str] = Field(default_factory=dict, description="the jinja template's variables")

    names: dict[Role, str] = Field(default_factory=_speaker_names)
    turn: str = "{name}:\n{content}\n\n"
    system: str = "{content}\n\n"  # the system message is a preface, not a speaker
    reply: str = "{name}:\n"
    stop: list[str] = Field(default_factory=lambda: ["\n\n"])

    def render(self, messages: list[ChatMessage]) -> str:
        """The transcript of ``messages`` followed by the start of the assistant's turn."""
        if not messages:
            raise InvalidInput("messages: give at least one message")
        if self.jinja is not None:
            return self._render_jinja(messages)
        return "".join(self.render_message(m) for m in messages) + self._reply()

    def _render_jinja(self, messages: list[ChatMessage]) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        chat = [{"role": m.speaker, "content": m.content, **({"name": m.name} if m.name else {})}
                for m in messages]
        try:
            rendered, _ = render_jinja_template([chat], chat_template=self.jinja,
                                                add_generation_prompt=True, **self.tokens)
        except Exception as e:  # the template's own raise_exception, or a jinja error
            raise InvalidInput(f"messages: the model's chat template refused them "
                               f"({str(e).splitlines()[0][:160]})") from None
        return str(rendered[0])

    def render_message(self, m: ChatMessage) -> str:
        """One message's part of the transcript; a message's ``name`` is its speaker's name."""
        if m.speaker == "system":
            return self.system.format(content=m.content, name=m.name or "")
        return self.turn.format(name=m.name or self.names[m.speaker], content=m.content)

    def _reply(self) -> str:
        return self.reply.format(name=self.names["assistant"])

    def render_within(self, messages: list[ChatMessage], count: Callable[[str], int],
                      budget: int | None) -> str:
        """The rendered prompt, dropping the oldest turns (never the system message nor the last
        message) until it is at most ``budget`` tokens by ``count`` (a tokenizer's length): a
        long conversation keeps going in a short context. ``None``: no budget, nothing dropped.

        Linear in the transcript: each turn is counted once, the oldest are dropped by their
        summed counts, and only the kept prompt (about ``budget`` tokens) is counted again, since
        a tokenizer may merge across a turn's boundary; if it is still over, more turns go."""
        if not messages:
            raise InvalidInput("messages: give at least one message")
        if budget is None:
            return self.render(messages)
        if self.jinja is not None:  # whole renders: a template may depend on every message
            kept = list(range(len(messages)))
            oldest = [i for i in kept[:-1] if messages[i].speaker != "system"]
            prompt = self.render(messages)
            while count(prompt) > budget and oldest:
                kept.remove(oldest.pop(0))
                prompt = self.render([messages[i] for i in kept])
            return prompt
        parts = [self.render_message(m) for m in messages]
        reply = self._reply()
        cost = [count(p) for p in parts]
        total = sum(cost) + count(reply)
        droppable = deque(i for i, m in enumerate(messages[:-1]) if m.speaker != "system")
        dropped: set[int] = set()
        while True:
            while total > budget and droppable:
                i = droppable.popleft()
                dropped.add(i)
                total -= cost[i]
            prompt = "".join(p for i, p in enumerate(parts) if i not in dropped) + reply
            if not droppable:
                return prompt  # over the budget: the caller's length check names the problem
            total = count(prompt)
            if total <= budget:
                return prompt

    def as_jinja(self) -> str:
        """This template as a jinja chat template (Hugging Face's ``chat_template``): rendered
        with ``add_generation_prompt=True`` it gives ``render``'s text for the same messages
        (the stop strings are not part of a jinja template: the model card names them). An
        imported model's own jinja template is returned as it is."""
        if self.jinja is not None:
            return self.jinja
        names = json.dumps({"user": self.names["user"], "assistant": self.names["assistant"]},
                           ensure_ascii=False)
        speaker = f"(message['name'] or {names}[message['role']])"
        system = _jinja_format(self.system, {"content": "message['content']",
                                             "name": "(message['name'] or '')"})
        turn = _jinja_format(self.turn, {"content": "message['content']", "name": speaker})
        reply = _jinja_format(self.reply, {"name": json.dumps(self.names["assistant"],
                                                              ensure_ascii=False)})
        return ("{% for message in messages %}{% if message['role'] in ['system', 'developer'] %}"
                f"{system}{{% else %}}{turn}{{% endif %}}{{% endfor %}}"
                f"{{% if add_generation_prompt %}}{reply}{{% endif %}}")

    def describe(self) -> str:
        """Markdown for the model card."""
        if self.jinja is not None:
            return (f"Messages are rendered by the model's own jinja chat template:\n\n"
                    f"```jinja\n{self.jinja}\n```\n")
        example = self.render([ChatMessage(role="user", content="Hello")])
        return (f"Messages are rendered as a transcript and the model continues it; the reply "
                f"ends at {', '.join(repr(s) for s in self.stop)}. A user message `Hello` becomes:"
                f"\n\n```\n{example}\n```\n")


def _jinja_format(fmt: str, fields: dict[str, str]) -> str:
    """A ``str.format`` template as jinja: literal text as jinja string literals (so no character
    of it is read as jinja syntax), each ``{field}`` as the jinja expression ``fields`` gives."""
    out = []
    for literal, field, _, _ in string.Formatter().parse(fmt):
        if literal:
            out.append("{{ " + json.dumps(literal, ensure_ascii=False) + " }}")
        if field is not None:
            if field not in fields:
                raise InvalidInput(f"chat template field {{{field}}} is not one of "
                                   f"{', '.join('{' + f + '}' for f in fields)}")
            out.append("{{ " + fields[field] + " }}")
    return "".join(out)


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


def moderated_messages(moderator: Moderator, extra: dict[str, Any]) -> dict[str, Any]:
    """A chat's recorded messages as moderation lets them through: each checked as a prompt
    (one the policy blocks refuses the request, even a turn too old to fit the context),
    redacted where it redacts."""
    messages = extra.get("messages")
    if not messages:
        return extra
    kept = []
    for i, message in enumerate(messages):
        verdict = moderator.check(str(message.get("content") or ""), "prompt")
        if verdict.blocked:
            raise ContentBlocked(f"messages.{i}.content: refused by the moderation policy "
                                 f"({verdict.reason()})", param=f"messages.{i}.content")
        kept.append({**message, "content": verdict.text} if verdict.redacted else message)
    return {**extra, "messages": kept}
