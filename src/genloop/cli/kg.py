"""``genloop kg load|list|query|stats|link|check``: knowledge graphs in the workspace database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from genloop.cli.console import command_app, err, faced, out

if TYPE_CHECKING:
    from genloop.knowledge.graph import Graph
    from genloop.knowledge.linking import Embed

app = command_app(help="Knowledge graphs: load triples, query an entity's neighbourhood, link a "
                  "text to the graph's entities and check the claims it makes.", no_args_is_help=True,
                  epilog="Examples:\n\n    genloop kg load world.csv --name world\n\n"
                  "    genloop kg query world 'Alice Varn' --hops 2\n\n"
                  "    genloop kg check world 'Alice Varn lives in Tolmeria.'")

AsJson = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
Name = Annotated[str, typer.Argument(help="the graph's name (genloop kg list)")]
Embedder = Annotated[str | None, typer.Option(
    help="also link by embedding similarity with this embedder (an imported encoder such as "
    "MiniLM: genloop import DIR)")]


def _graph(name: str) -> Graph:
    from genloop.knowledge.graph import load_graph
    from genloop.store import Store

    return load_graph(Store(), name)


def _embed(embedder: str | None) -> Embed | None:
    if embedder is None:
        return None
    from genloop.generation.embeddings import embed_texts, load_embedder

    model = load_embedder(embedder)
    return lambda texts: embed_texts(model, texts).vectors


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False))


def _triples_table(title: str, triples: list[Any]) -> Table:
    table = Table("subject", "relation", "object", title=title)
    for t in triples:
        table.add_row(t.subject, t.relation, t.object)
    return table


@app.command("load", epilog="Examples:\n\n    genloop kg load world.csv --name world\n\n"
             "    genloop kg load facts.ttl --name facts --lexicon lexicon.json\n\n"
             "    genloop kg load world.jsonl --name world --replace")
@faced
def kg_load(
    file: Annotated[Path, typer.Argument(
        help="a .csv (subject,relation,object), .jsonl, .nt or .ttl file")],
    name: Annotated[str | None, typer.Option(
        help="the graph's name [default: the file's stem]")] = None,
    format: Annotated[str | None, typer.Option(
        help="csv | jsonl | nt | ttl [default: from the suffix]")] = None,
    lexicon: Annotated[Path | None, typer.Option(
        help="a JSON/YAML file: relation → phrasings, e.g. "
        "{\"lives_in\": [\"{s} lives in {o}\"]}")] = None,
    replace: Annotated[bool, typer.Option(
        help="replace a stored graph of this name that holds other facts")] = False,
    as_json: AsJson = False,
) -> None:
    """Read a triples file and store it as a graph: all of it or, on any error, nothing."""
    from genloop.knowledge.graph import read_graph
    from genloop.store import Store

    graph = read_graph(file, name=name, format=format, lexicon=lexicon)
    record = Store().kg_save(graph, replace=replace)
    if as_json:
        _print_json(record.model_dump(mode="json"))
        return
    out.print(f"{record.name}: {record.entities:,} entities, {record.aliases:,} aliases, "
              f"{record.triples:,} triples ({record.hash[:19]})", highlight=False)


@app.command("list", epilog="Example:\n\n    genloop kg list")
@faced
def kg_list(as_json: AsJson = False) -> None:
    """The graphs stored in this workspace."""
    from genloop.store import Store

    records = Store().kg_graphs()
    if as_json:
        _print_json([r.model_dump(mode="json") for r in records])
        return
    table = Table("name", "entities", "aliases", "triples", "hash", "created")
    for r in records:
        table.add_row(r.name, f"{r.entities:,}", f"{r.aliases:,}", f"{r.triples:,}", r.hash[:19],
                      r.created_at.strftime("%Y-%m-%d %H:%M"))
    out.print(table)


@app.command("query", epilog="Examples:\n\n    genloop kg query world 'Alice Varn'\n\n"
             "    genloop kg query world Ali --hops 2 --limit 20\n\n"
             "    genloop kg query world 'Alice Varn' --relation lives_in --json")
@faced
def kg_query(
    name: Name,
    entity: Annotated[str, typer.Argument(help="an entity's name or alias")],
    hops: Annotated[int, typer.Option(help="how far from the entity (1-5)")] = 1,
    relation: Annotated[str | None, typer.Option(help="only the entity's facts of this relation")] = None,
    limit: Annotated[int, typer.Option(help="at most this many triples")] = 64,
    as_json: AsJson = False,
) -> None:
    """An entity's facts (with --relation) or its k-hop neighbourhood."""
    graph = _graph(name)
    canonical = graph.entity(entity)
    if relation is not None:
        triples = graph.facts(canonical, relation)[:limit]
    else:
        triples = graph.neighbourhood(canonical, hops=hops, limit=limit)
    if as_json:
        _print_json({"graph": graph.name, "entity": canonical, "triples": [
            [t.subject, t.relation, t.object] for t in triples]})
        return
    if not triples:
        err.print(f"{canonical}: no facts" + (f" of relation {relation!r}" if relation else ""))
    out.print(_triples_table(canonical, triples))


@app.command("stats", epilog="Examples:\n\n    genloop kg stats world\n\n    genloop kg stats world --json")
@faced
def kg_stats(name: Name, as_json: AsJson = False) -> None:
    """How many entities, aliases and triples a graph has, and each relation's count."""
    graph = _graph(name)
    stats = graph.stats()
    if as_json:
        _print_json(stats)
        return
    out.print(f"{graph.name} ({graph.hash[:19]}): {stats['entities']:,} entities, "
              f"{stats['aliases']:,} aliases, {stats['triples']:,} triples", highlight=False)
    table = Table("relation", "triples", "phrasings")
    for relation, count in stats["relations"].items():
        table.add_row(relation, f"{count:,}", " | ".join(graph.lexicon.get(relation, [])))
    out.print(table)


@app.command("link", epilog="Examples:\n\n    genloop kg link world 'Where does Ali live?'\n\n"
             "    genloop kg link world 'the capital of Ostvale' --embedder minilm --json")
@faced
def kg_link(
    name: Name,
    text: Annotated[str, typer.Argument(help="the text to link")],
    fuzzy: Annotated[float, typer.Option(help="least name similarity of a fuzzy link (1: off)")] = 0.85,
    embedder: Embedder = None,
    as_json: AsJson = False,
) -> None:
    """The graph's entities a text mentions: exact names, aliases, near misses, and (with
    --embedder) embedding similarity."""
    from genloop.errors import InvalidInput

    if not 0.5 <= fuzzy <= 1.0:
        raise InvalidInput(f"--fuzzy must be between 0.5 and 1, not {fuzzy}")
    graph = _graph(name)
    links = graph.link(text, embed=_embed(embedder), fuzzy=fuzzy)
    if as_json:
        _print_json([{"mention": k.mention, "entity": k.entity, "start": k.start, "end": k.end,
                      "score": k.score, "how": k.how} for k in links])
        return
    table = Table("mention", "entity", "how", "score", "at")
    for k in links:
        table.add_row(k.mention, k.entity, k.how, f"{k.score:.3f}", f"{k.start}-{k.end}")
    out.print(table)


@app.command("check", epilog="Examples:\n\n    genloop kg check world 'Alice Varn lives in Tolmeria.'\n\n"
             "    genloop kg check world \"$(cat answer.txt)\" --json")
@faced
def kg_check(
    name: Name,
    text: Annotated[str, typer.Argument(help="the text whose claims to check")],
    embedder: Embedder = None,
    as_json: AsJson = False,
) -> None:
    """Check each claim a text makes about the graph's entities: supported, contradicted (the
    graph holds another object) or not in the graph."""
    from genloop.knowledge.factcheck import check, summary

    graph = _graph(name)
    claims = check(graph, text, embed=_embed(embedder))
    if as_json:
        _print_json({"claims": [{"subject": c.subject, "relation": c.relation, "object": c.object,
                                 "verdict": c.verdict, "graph": list(c.graph_objects),
                                 "sentence": c.sentence} for c in claims],
                     "summary": summary(claims)})
        return
    table = Table("subject", "relation", "object", "verdict", "the graph says")
    colour = {"supported": "green", "contradicted": "red", "not_in_graph": "yellow"}
    for c in claims:
        table.add_row(c.subject, c.relation, c.object, f"[{colour[c.verdict]}]{c.verdict}[/]",
                      ", ".join(c.graph_objects))
    out.print(table)
    counts = summary(claims)
    out.print(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()), highlight=False)
