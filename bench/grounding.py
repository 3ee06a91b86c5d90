"""Grounded generation on the built-in world's held-out entities: descriptions, question
answering and support dialogues, each with and without the triples retrieved from the graph.

    python -m bench.grounding [--quick] [--steps N] [--time-limit S]

The world (``genloop.data.world``) is a seeded graph of fictional people, products and orders;
a fifth of them are held out: the models are trained (recipes ``world-describe``, ``world-qa``,
``world-assistant``) on text about the others only, so about a held-out entity a model knows
nothing but the facts it is given. The graph is loaded into the workspace (``Store.kg_save``);
a grounded request names it (``grounding={"graph": "world"}``) and each prompt's facts are
retrieved by linking it to the graph (``knowledge.graph.retrieve``). "Without retrieval" is the
same model given the prompt alone.

1. Descriptions (``Describe NAME.``): the claims of each text, read by the fact checker
   (``knowledge.factcheck.check``) — supported / contradicted / not in the graph;
   hallucination = contradicted + not in the graph, as a share of the claims.
2. Questions (``Q: ...\\nA: ``): exact match of the answer with the graph's object; on questions
   the graph has no answer to, the share answered ``I don't know.``
3. Dialogues through the official ``openai`` client against a real ``genloop serve``: the
   customer asks about "my order", the assistant must ask which order, the customer names it,
   the assistant must answer from the graph. Success = both assistant turns right.

Greedy decoding throughout. ``--quick``: fewer steps and fewer held-out items (what a helper
runs on a shared machine); the full run is what BENCHMARKS.md shows.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, save, table

GRAPH = "world"


def train_model(recipe: str, steps: int | None, time_limit: float | None) -> dict[str, Any]:
    """The newest version of ``recipe`` trained for these steps in this workspace, or train it."""
    import genloop
    from genloop.store import Store

    sets = [f"train.steps={steps}"] if steps else []
    sets += [f"train.time_limit_s={time_limit}"] if time_limit else []
    sets += ["train.tensorboard=false"]
    want = genloop.load_recipe(recipe, sets)
    with Store() as store:  # the same recipe (steps, time limit) trained before: reused
        found = [v for v in store.list_models() if v.name == want.name
                 and v.recipe_hash == want.hash()]
    if found:
        v = max(found, key=lambda v: v.version)
        return {"ref": v.ref, **{k: (v.metrics or {}).get(k) for k in ("val_loss", "train_time_s",
                                                                    "train_steps")}}
    print(f"training {recipe} ...", flush=True)
    t0 = time.perf_counter()
    result = genloop.train(want)
    return {"ref": result.model_ref, "val_loss": result.metrics.get("val_loss"),
            "train_time_s": result.metrics.get("train_time_s", time.perf_counter() - t0),
            "train_steps": result.metrics.get("train_steps")}


def load_graph() -> Any:
    """The built-in world's graph, saved into the workspace as ``world``."""
    from genloop.data import world as w
    from genloop.knowledge.graph import Graph
    from genloop.store import Store

    graph = Graph.from_triples(GRAPH, w.world_triples(), lexicon=w.LEXICON)
    with Store() as store:
        if not any(g.name == GRAPH and g.hash == graph.hash for g in store.kg_graphs()):
            store.kg_save(graph, replace=True)
    return graph


def _grounding(on: bool, max_triples: int) -> dict[str, Any] | None:
    return {"graph": GRAPH, "max_triples": max_triples} if on else None


def descriptions(ref: str, graph: Any, entities: list[str], max_triples: int) -> dict[str, Any]:
    """The fact checker's verdicts on descriptions of ``entities``, with and without retrieval."""
    import genloop
    from genloop.data import world as w
    from genloop.knowledge.factcheck import check, summary

    model = genloop.load(ref)
    out: dict[str, Any] = {}
    for on in (True, False):
        counts = {"supported": 0, "contradicted": 0, "not_in_graph": 0}
        t0 = time.perf_counter()
        examples = []
        for i, e in enumerate(entities):
            text = model.generate(w.describe_prompt(e), max_new_tokens=200, temperature=0.0,
                                  seed=i, stop=["\n"], grounding=_grounding(on, max_triples))[0].text
            for k, v in summary(check(graph, text)).items():
                counts[k] += v
            if len(examples) < 2:
                examples.append(text)
        claims = sum(counts.values())
        out["with" if on else "without"] = {
            **counts, "claims": claims, "texts": len(entities),
            "supported_share": counts["supported"] / claims if claims else None,
            "hallucination": (counts["contradicted"] + counts["not_in_graph"]) / claims
            if claims else None, "seconds": time.perf_counter() - t0, "examples": examples}
    h_with, h_without = out["with"]["hallucination"], out["without"]["hallucination"]
    out["hallucination_ratio"] = (h_without / h_with if h_with else float("inf")) \
        if h_with is not None and h_without is not None else None
    return out


def _norm(text: str) -> str:
    return text.strip().rstrip(".").strip().casefold()


def answers(ref: str, qs: list[Any], max_triples: int) -> dict[str, Any]:
    """Exact match on answerable questions and the "I don't know." share on the others."""
    import genloop
    from genloop.data import world as w

    model = genloop.load(ref)
    out: dict[str, Any] = {}
    for on in (True, False):
        right = idk = answerable = 0
        t0 = time.perf_counter()
        wrong = []
        for i, q in enumerate(qs):
            text = model.generate(w.qa_prompt(q.text), max_new_tokens=48, temperature=0.0,
                                  seed=i, stop=["\n"], grounding=_grounding(on, max_triples))[0].text
            if q.answer is None:
                idk += _norm(text) == _norm(w.IDK)
            else:
                answerable += 1
                ok = _norm(text) == _norm(q.answer)
                right += ok
                if not ok and len(wrong) < 3:
                    wrong.append({"question": q.text, "expected": q.answer, "got": text})
        unanswerable = len(qs) - answerable
        out["with" if on else "without"] = {
            "exact_match": right / answerable if answerable else None,
            "idk_share": idk / unanswerable if unanswerable else None,
            "answerable": answerable, "unanswerable": unanswerable,
            "seconds": time.perf_counter() - t0, "wrong": wrong}
    return out


def dialogues(home: Path, ref: str, ds: list[Any], max_triples: int) -> dict[str, Any]:
    """Scripted held-out conversations through the official openai client and a real server."""
    import openai

    from bench.serving import Server
    from genloop.data import world as w

    server = Server(home, ref, "grounding", "--no-auth", "--rate-limit", "0")  # a scripted client
    out: dict[str, Any] = {}
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        for on in (True, False):
            asked = answered = both = 0
            t0 = time.perf_counter()
            failures = []
            extra = {"grounding": {"graph": GRAPH, "max_triples": max_triples}} if on else {}
            refused = 0

            def say(messages: list[dict[str, str]], seed: int,
                    extra: dict[str, Any] = extra) -> tuple[str, Any]:
                nonlocal refused
                try:
                    choice = client.chat.completions.create(
                        model=ref, messages=messages, max_tokens=80, temperature=0.0,  # type: ignore[arg-type]
                        seed=seed, extra_body=extra).choices[0]
                except openai.BadRequestError:  # e.g. the facts do not fit: a failed turn
                    refused += 1
                    return "", None
                return choice.message.content or "", choice

            for i, d in enumerate(ds):
                messages: list[dict[str, str]] = [{"role": "user", "content": d.question}]
                first, _ = say(messages, i)
                ok1 = first.strip() == w.CLARIFY
                messages += [{"role": "assistant", "content": first},
                             {"role": "user", "content": d.naming}]
                second, reply = say(messages, i)
                ok2 = _norm(second) == _norm(d.expected)
                asked += ok1
                answered += ok2
                both += ok1 and ok2
                if not (ok1 and ok2) and len(failures) < 3:
                    failures.append({"turns": d.user_turns(), "replies": [first, second],
                                     "expected": d.expected})
                if on and reply is not None and "first_grounding_extra" not in out:
                    out["first_grounding_extra"] = (reply.model_extra or {}).get("grounding")
            out["with" if on else "without"] = {
                "task_success": both / len(ds), "clarified": asked / len(ds),
                "answered": answered / len(ds), "conversations": len(ds), "refused_turns": refused,
                "seconds": time.perf_counter() - t0, "failures": failures}
    finally:
        server.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps and items (a few minutes "
                                                         "a model on a shared machine)")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    ap.add_argument("--time-limit", type=float, default=None, help="training seconds per model")
    ap.add_argument("--items", type=int, default=None, help="held-out items per task")
    ap.add_argument("--max-triples", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--describe-recipe", default="world-describe",
                    help="the recipe whose model writes the descriptions (world-qa's source holds "
                         "the descriptions too, so its model can: one training fewer)")
    ap.add_argument("--qa-recipe", default="world-qa")
    ap.add_argument("--assistant-recipe", default="world-assistant")
    ap.add_argument("--name", default="grounding", help="the result's name (bench/results/NAME.md)")
    args = ap.parse_args()
    out_dir = ROOT / "bench" / "out" / "grounding"
    out_dir.mkdir(parents=True, exist_ok=True)
    home = out_dir / "home"
    os.environ.setdefault("GENLOOP_HOME", str(home))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from genloop.data import world as w

    items = args.items or (40 if args.quick else 200)
    rng = random.Random(args.seed)
    world = w.build_world()
    graph = load_graph()
    entities = [e for kind in ("person", "product", "order")
                for e in world.entities(kind, held_out=True)]
    rng.shuffle(entities)
    described = entities[:items]
    qs = [q for e in entities[: items * 2] for q in w.questions(world, e, rng)]
    answerable = [q for q in qs if q.answer is not None][: items * 2]
    unanswerable = [q for q in qs if q.answer is None][:items]
    orders = world.entities("order", held_out=True)
    rng.shuffle(orders)
    ds = [w.dialogue(world, o, rng) for o in orders[: max(10, items // 2)]]

    recipes = {"world-describe": args.describe_recipe, "world-qa": args.qa_recipe,
               "world-assistant": args.assistant_recipe}
    trained = {r: train_model(r, args.steps, args.time_limit) for r in dict.fromkeys(recipes.values())}
    models = {task: {"recipe": r, **trained[r]} for task, r in recipes.items()}
    figures: dict[str, Any] = {"models": models, "items": items, "max_triples": args.max_triples,
                               "graph": {"triples": len(world.triples),
                                         "held_out": len(world.held_out), "hash": graph.hash}}
    figures["descriptions"] = descriptions(models["world-describe"]["ref"], graph, described,
                                           args.max_triples)
    figures["qa"] = answers(models["world-qa"]["ref"], answerable + unanswerable, args.max_triples)
    figures["dialogue"] = dialogues(Path(os.environ["GENLOOP_HOME"]),
                                    models["world-assistant"]["ref"], ds, args.max_triples)
    save(args.name, figures, report(figures, args))


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def report(f: dict[str, Any], args: argparse.Namespace) -> str:
    d, q, c = f["descriptions"], f["qa"], f["dialogue"]
    m = f["models"]
    trained = "; ".join(f"{name.removeprefix('world-')}: `{v.get('recipe', name)}` "
                        f"{v.get('train_steps')} steps in {v.get('train_time_s') or 0:.0f} s "
                        f"(val loss {v.get('val_loss') or 0:.3f})" for name, v in m.items())
    rows = [
        ["descriptions: supported claims", _pct(d["with"]["supported_share"]),
         _pct(d["without"]["supported_share"]), "≥ 95% with"],
        ["descriptions: contradicted / not in graph",
         f"{d['with']['contradicted']} / {d['with']['not_in_graph']} of {d['with']['claims']}",
         f"{d['without']['contradicted']} / {d['without']['not_in_graph']} of "
         f"{d['without']['claims']}", ""],
        ["descriptions: hallucination rate", _pct(d["with"]["hallucination"]),
         _pct(d["without"]["hallucination"]),
         f"≥ 5× lower with (here {d['hallucination_ratio'] or 0:.1f}×)"],
        ["QA: exact match (answerable)", _pct(q["with"]["exact_match"]),
         _pct(q["without"]["exact_match"]), "≥ 90% with"],
        ["QA: unanswerable → \"I don't know.\"", _pct(q["with"]["idk_share"]),
         _pct(q["without"]["idk_share"]), "≥ 90% with"],
        ["dialogue: task success (openai client)", _pct(c["with"]["task_success"]),
         _pct(c["without"]["task_success"]), ""],
        ["dialogue: clarifying question asked", _pct(c["with"]["clarified"]),
         _pct(c["without"]["clarified"]), ""],
    ]
    return "\n".join([
        "## Grounding on the built-in world: descriptions, QA and dialogue on held-out entities"
        + ("" if args.name == "grounding" else f" ({args.name})"),
        "",
        f"The built-in world ({f['graph']['triples']:,} triples; {f['graph']['held_out']:,} "
        "held-out people, products and orders that no training text mentions). Models: "
        f"{trained}. Each grounded request retrieves at most {f['max_triples']} triples from the "
        "graph `world` for its prompt (dialogue: the user's messages); without retrieval the same "
        f"model reads the prompt alone. Greedy. {d['with']['texts']} descriptions, "
        f"{q['with']['answerable']} answerable and {q['with']['unanswerable']} unanswerable "
        f"questions, {c['with']['conversations']} conversations through the official `openai` "
        "client against `genloop serve`." + (" (`--quick`)" if args.quick else ""),
        "",
        table(["", "with retrieval", "without", "target"], rows),
    ])


if __name__ == "__main__":
    main()
