"""Moderation on the labelled set of tests/safety: recall on blocked items, false-positive rate
on ordinary ones, PII redaction exactness, in English and Chinese; the rules (blocklists,
patterns, PII) and a classifier genloop trains on the same items, 5-fold cross-validated.

    python -m bench.moderation [--folds 5] [--steps 100]

The rules are judged by the set's own policy (tests/safety/labelled-policy.yaml), so their
figures say that the matching (folding, word boundaries, CJK substrings, Luhn) does what the
policy means, not how good a blocklist is. The classifier's figures are held-out: each item is
scored by a classifier trained on the other folds. Timing: the mean time of one check.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import ROOT, save, table
from genloop.safety.classifier import train_classifier
from genloop.safety.moderator import Moderator
from genloop.safety.policy import load_policy

SET = ROOT / "tests" / "safety" / "labelled.jsonl"
POLICY = ROOT / "tests" / "safety" / "labelled-policy.yaml"


def load_set() -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in SET.read_text(encoding="utf-8").splitlines() if line]


def rates(rows: list[dict[str, Any]], blocked: list[bool]) -> dict[str, Any]:
    pos = [b for r, b in zip(rows, blocked, strict=True) if r["label"] == "blocked"]
    neg = [b for r, b in zip(rows, blocked, strict=True) if r["label"] == "ordinary"]
    return {"recall": sum(pos) / max(1, len(pos)), "false_positive_rate": sum(neg) / max(1, len(neg)),
            "blocked_items": len(pos), "ordinary_items": len(neg)}


def rules(rows: list[dict[str, Any]]) -> dict[str, Any]:
    moderator = Moderator(load_policy(POLICY))
    t0 = time.perf_counter()
    verdicts = [moderator.check(r["text"], r["stage"]) for r in rows]
    per_check_ms = (time.perf_counter() - t0) / len(rows) * 1000
    out: dict[str, Any] = {"per_check_ms": per_check_ms}
    for lang in ("en", "zh", "all"):
        keep = [i for i, r in enumerate(rows) if lang in ("all", r["lang"])]
        sub = [rows[i] for i in keep]
        figures = rates(sub, [verdicts[i].blocked for i in keep])
        pii = [(rows[i], verdicts[i]) for i in keep if rows[i]["label"] == "pii"]
        figures["pii_items"] = len(pii)
        figures["pii_exact"] = sum(v.text == r["redacted"] for r, v in pii) / max(1, len(pii))
        # ordinary items redacted or flagged: a false positive of the PII checks
        ordinary = [verdicts[i] for i in keep if rows[i]["label"] == "ordinary"]
        figures["ordinary_touched"] = sum(v.action != "allow" for v in ordinary) / max(1, len(ordinary))
        out[lang] = figures
    return out


def classifier(rows: list[dict[str, Any]], folds: int, steps: int) -> dict[str, Any]:
    items = [r for r in rows if r["label"] in ("blocked", "ordinary")]
    predicted = [False] * len(items)
    t0 = time.perf_counter()
    for k in range(folds):
        train = [(r["text"], r["label"]) for i, r in enumerate(items) if i % folds != k]
        model = train_classifier(train, steps=steps)
        test = [i for i in range(len(items)) if i % folds == k]
        for i, s in zip(test, model.scores([items[i]["text"] for i in test]), strict=True):
            predicted[i] = s["blocked"] >= 0.5
    figures = rates(items, predicted)
    figures["train_s_per_fold"] = (time.perf_counter() - t0) / folds
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100, help="L-BFGS iterations at most")
    args = parser.parse_args()
    rows = load_set()
    r = rules(rows)
    c = classifier(rows, args.folds, args.steps)
    figures = {"rules": r, "classifier": c, "items": len(rows)}
    md = "\n".join([
        "## Moderation: the labelled set (English and Chinese)",
        "",
        f"{len(rows)} items in tests/safety/labelled.jsonl: blocked, ordinary and personal-data "
        "prompts and outputs. Rules: the set's policy (blocklists, patterns, the default PII "
        "redaction). Classifier: char n-gram linear model trained by `genloop moderation train`'s "
        "code (L2-penalised, class-weighted logistic regression by scikit-learn's L-BFGS, at most "
        f"{args.steps} iterations), {args.folds}-fold cross-validated (held-out scores).",
        "",
        table(["checks", "language", "recall on blocked", "false-positive rate", "PII redacted exactly",
               "ordinary items touched"],
              [["rules", lang, r[lang]["recall"], r[lang]["false_positive_rate"], r[lang]["pii_exact"],
                r[lang]["ordinary_touched"]] for lang in ("en", "zh", "all")]
              + [["classifier (held-out)", "all", c["recall"], c["false_positive_rate"], "—", "—"]]),
        "",
        f"One check by the rules takes {r['per_check_ms']:.3f} ms on average; a classifier fold "
        f"trains in {c['train_s_per_fold']:.2f} s.",
        "",
        "Reading: the rules do exactly what the policy says on every item, evasions included "
        "(full-width letters, zero-width spaces, doubled spaces, traditional characters listed "
        "as terms), without touching ordinary text that shares letters or characters with a term "
        "(skill, killer whales, 杀毒软件) or digits with a phone or card (dates, ISBNs, order "
        "numbers, Luhn-invalid 16-digit numbers). The classifier, trained on a few dozen items, "
        "generalises only partly: its row is the baseline a workspace's own larger labelled set "
        "would improve on.",
    ])
    save("moderation", figures, md)
    print(md)


if __name__ == "__main__":
    main()
