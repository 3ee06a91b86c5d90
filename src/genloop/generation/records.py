"""A fine-tuning file read for one model: the canonical records of ``data.formats``, with message
lists rendered by the model's own chat template and every prompt checked against its context.

Both faces tune from files through this one function: the fine-tuning jobs (``serving/tuning.py``,
an uploaded file) and ``genloop tune --data FILE`` (``cli/tune.py``), so a file is read the same
way, in genloop's, TRL's or OpenAI's shape, wherever it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from genloop.data.formats import read_tuning_records
from genloop.errors import InvalidInput, validation_message
from genloop.generation.chat import ChatMessage, load_chat_template
from genloop.models.modeldir import ModelDir


def tuning_records(path: str | Path, form: str, directory: ModelDir) -> list[dict[str, Any]]:
    """The canonical records of the JSON Lines file ``path`` of ``form`` (pairs, paired or
    unpaired) for the model in ``directory``: messages rendered with its chat template, a prompt
    longer than its context (``block_size`` tokens) refused. Raises InvalidInput naming the line
    and the field."""
    _, config = directory.family_config()
    template = load_chat_template(directory)

    def render(messages: list[dict[str, Any]]) -> str:
        try:
            return template.render([ChatMessage.model_validate(m) for m in messages])
        except ValidationError as e:
            raise InvalidInput(validation_message(e, prefix="messages.")) from None

    return read_tuning_records(Path(path), form, render=render,
                               max_prompt_tokens=getattr(config, "block_size", None),
                               tokenizer=directory.tokenizer())
