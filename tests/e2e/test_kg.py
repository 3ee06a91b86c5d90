"""``genloop kg`` through the real command: load, query, stats, link, check, and bad input as
one line with nothing stored."""

import json
from pathlib import Path

WORLD = ("subject,relation,object\nAlice Varn,lives_in,Tolmeria\nAlice Varn,alias,Ali\n"
         "Alice Varn,works_for,Brinco Ltd\nBrinco Ltd,located_in,Tolmeria\n")


def test_load_query_link_check(cli, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (tmp_path / "world.csv").write_text(WORLD, encoding="utf-8")
    (tmp_path / "lex.json").write_text(json.dumps({"lives_in": ["{s} lives in {o}", "{s} is from {o}"]}))
    r = cli(["kg", "load", str(tmp_path / "world.csv"), "--lexicon", str(tmp_path / "lex.json"),
             "--json"], home)
    assert r.returncode == 0, r.stderr
    loaded = json.loads(r.stdout)
    assert (loaded["name"], loaded["triples"], loaded["aliases"]) == ("world", 3, 1)

    r = cli(["kg", "query", "world", "ali", "--hops", "2", "--json"], home)
    assert json.loads(r.stdout) == {"graph": "world", "entity": "Alice Varn", "triples": [
        ["Alice Varn", "lives_in", "Tolmeria"], ["Alice Varn", "works_for", "Brinco Ltd"],
        ["Brinco Ltd", "located_in", "Tolmeria"]]}
    r = cli(["kg", "query", "world", "Alice Varn", "--relation", "works_for", "--json"], home)
    assert json.loads(r.stdout)["triples"] == [["Alice Varn", "works_for", "Brinco Ltd"]]

    stats = json.loads(cli(["kg", "stats", "world", "--json"], home).stdout)
    assert stats["relations"] == {"lives_in": 1, "works_for": 1, "located_in": 1}
    assert stats["entities"] == 3

    links = json.loads(cli(["kg", "link", "world", "Is allice varn Ali?", "--json"], home).stdout)
    assert [(k["entity"], k["how"]) for k in links] == [("Alice Varn", "fuzzy"), ("Alice Varn", "alias")]

    r = cli(["kg", "check", "world", "Ali is from Brinco Ltd. She works for Brinco Ltd.", "--json"], home)
    checked = json.loads(r.stdout)
    assert checked["summary"] == {"supported": 1, "contradicted": 1, "not_in_graph": 0}
    assert checked["claims"][0]["graph"] == ["Tolmeria"]


def test_bad_input_is_one_line_and_stores_nothing(cli, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (tmp_path / "world.csv").write_text(WORLD, encoding="utf-8")
    (tmp_path / "bad.csv").write_text("subject,relation,object\nA,r,B\nA,r\n", encoding="utf-8")
    (tmp_path / "cyclic.csv").write_text("subject,relation,object\nA,alias,B\nB,alias,A\n")
    for args, code, message in [
        (["kg", "load", str(tmp_path / "bad.csv")], 2, "bad.csv:3: expected 3 fields"),
        (["kg", "load", str(tmp_path / "cyclic.csv")], 2, "alias cycle: "),
        (["kg", "query", "world", "Alice"], 3, "no knowledge graph 'world'"),
    ]:
        r = cli(args, home)
        assert r.returncode == code and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert json.loads(cli(["kg", "list", "--json"], home).stdout) == []
    assert cli(["kg", "load", str(tmp_path / "world.csv")], home).returncode == 0
    r = cli(["kg", "query", "world", "Alise Varn"], home)
    assert r.returncode == 3 and "closest: Alice Varn" in r.stderr
    (tmp_path / "world.csv").write_text(WORLD + "Bob,lives_in,Sarnak\n", encoding="utf-8")
    r = cli(["kg", "load", str(tmp_path / "world.csv")], home)
    assert r.returncode == 7 and "--replace" in r.stderr
    r = cli(["kg", "load", str(tmp_path / "world.csv"), "--replace", "--json"], home)
    assert r.returncode == 0 and json.loads(r.stdout)["triples"] == 4
