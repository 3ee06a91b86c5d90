"""Every model family by name. Adding a family: one new file in models/ and one line here."""

from __future__ import annotations

from genloop.errors import RecipeError
from genloop.models import (
    captioner,
    classifier,
    diffusion,
    embedder,
    gan,
    gpt,
    hf,
    lstm,
    recogniser,
    reward,
    seq2seq,
    text_diffusion,
    text_gan,
    vae,
)
from genloop.models.family import Family

FAMILIES: dict[str, Family] = {
    "gpt": gpt.FAMILY,
    "lstm": lstm.FAMILY,
    "gan": gan.FAMILY,
    "vae": vae.FAMILY,
    "diffusion": diffusion.FAMILY,
    "classifier": classifier.FAMILY,
    "recogniser": recogniser.FAMILY,
    "reward": reward.FAMILY,
    "hf": hf.FAMILY,
    "embedder": embedder.FAMILY,
    "seq2seq": seq2seq.FAMILY,
    "text-diffusion": text_diffusion.FAMILY,
    "text-gan": text_gan.FAMILY,
    "captioner": captioner.FAMILY,
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted(FAMILIES))
        raise RecipeError(f"unknown model family {name!r} (known: {known})") from None
