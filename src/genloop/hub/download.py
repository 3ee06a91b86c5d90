"""A model from the Hugging Face Hub by repository id, pinned to one commit.

``download("org/name", revision)`` asks the Hub which commit ``revision`` (a branch, a tag, a
commit sha; default ``main``) is now, then fetches exactly that commit — config, tokenizer and
chat-template files and ``*.safetensors`` weights only, never a pickle — into the workspace cache
(``GENLOOP_CACHE/hub``, huggingface_hub's own layout). The commit sha is returned so the import
records it: the same lineage downloads the same bytes again, and ``import_model`` records the
sha256 of every file. Any failure (offline, no such repository or revision, a gated model) is
one line naming the repository. Tested against local directories only: the test machine cannot
reach the Hub (``HF_HUB_OFFLINE=1`` gives the offline error below).
"""

from __future__ import annotations

from pathlib import Path

from genloop.config import settings
from genloop.errors import InvalidInput

ALLOW = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
         "special_tokens_map.json", "chat_template.jinja", "*.safetensors",
         "model.safetensors.index.json", "modules.json", "sentence_bert_config.json",
         "1_Pooling/config.json"]


def download(repo_id: str, revision: str | None = None) -> tuple[Path, str]:
    """The local snapshot directory of ``repo_id`` at ``revision``, and its commit sha."""
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError:
        raise InvalidInput("downloading from the Hub needs huggingface_hub: "
                           "pip install 'genloop[hf]'") from None
    cache = settings().cache_dir / "hub"
    try:
        sha = HfApi().model_info(repo_id, revision=revision).sha
        if not sha:
            raise InvalidInput(f"{repo_id}: the Hub gave no commit for revision {revision or 'main'!r}")
        path = snapshot_download(repo_id, revision=sha, allow_patterns=ALLOW, cache_dir=cache)
    except InvalidInput:
        raise
    except Exception as e:  # huggingface_hub's errors: offline, not found, gated, network
        why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise InvalidInput(f"cannot download {repo_id!r}"
                           f"{f' at {revision!r}' if revision else ''} from the Hugging Face Hub "
                           f"({type(e).__name__}: {why})") from None
    return Path(path), sha
