"""``genloop moderation check|train|policy``: the workspace's moderation policy from the shell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from genloop.cli.console import command_app, err, faced, out

app = command_app(help="Check texts against the workspace's moderation policy "
                  "($GENLOOP_HOME/moderation.yaml) and train its classifier.",
                  no_args_is_help=True,
                  epilog="Examples:\n\n    genloop moderation check 'mail me at a@b.io'\n\n"
                  "    genloop moderation train labelled.jsonl --name toxic\n\n"
                  "    genloop moderation policy")


@app.command("check", epilog="Examples:\n\n    genloop moderation check 'call 555-123-4567'\n\n"
             "    genloop moderation check '我要杀人' --stage output --json")
@faced
def moderation_check(
    text: Annotated[str, typer.Argument(help="the text to check")],
    stage: Annotated[str, typer.Option(help="prompt or output")] = "prompt",
    as_json: Annotated[bool, typer.Option("--json", help="the verdict as JSON")] = False,
) -> None:
    """The policy's verdict on TEXT: allow, flag, redact or block (exit 1 when blocked)."""
    from genloop.errors import InvalidInput
    from genloop.safety.moderator import workspace_moderator

    if stage not in ("prompt", "output"):
        raise InvalidInput(f"--stage: prompt or output, not {stage!r}")
    verdict = workspace_moderator().check(text, stage, always=True)  # type: ignore[arg-type]
    if as_json:
        print(json.dumps({**verdict.record(), "text": verdict.text}, ensure_ascii=False))
    else:
        out.print(f"{verdict.reason()}", highlight=False)
        if verdict.redacted:
            out.print(verdict.text, markup=False, highlight=False)
    if verdict.blocked:
        raise typer.Exit(1)


@app.command("train", epilog="Example:\n\n    genloop moderation train labelled.jsonl --name toxic"
             "\n\n    then in moderation.yaml:  classifier: {model: toxic, labels: [toxic]}")
@faced
def moderation_train(
    examples: Annotated[Path, typer.Argument(help='a JSONL file of {"text": ..., "label": ...}')],
    name: Annotated[str, typer.Option(help="the model name to register it as")],
    steps: Annotated[int, typer.Option(min=1, max=10_000, help="L-BFGS iterations at most")] = 100,
    l2: Annotated[float, typer.Option(min=0.0, help="the L2 penalty on the n-gram weights")] = 1e-3,
    folds: Annotated[int, typer.Option(min=0, max=20, help=(
        "measure the held-out accuracy by k-fold cross-validation first (0: skip)"))] = 5,
) -> None:
    """Train the moderation classifier on labelled examples and register it as NAME@N (its card
    shows its held-out accuracy)."""
    from genloop.safety.classifier import (
        accuracy,
        cross_validated,
        file_sha256,
        read_examples,
        register_classifier,
        train_classifier,
    )
    from genloop.store import Store

    records = read_examples(examples)
    train: dict[str, Any] = {"steps": steps, "l2": l2}
    metrics = {"examples": float(len(records))}
    if folds >= 2 and len(records) >= 2 * folds:
        metrics.update(heldout_accuracy=cross_validated(records, folds, **train),
                       folds=float(folds))
    model = train_classifier(records, steps=steps, l2=l2)
    metrics["train_accuracy"] = accuracy(model, records)
    version = register_classifier(Store(), name, model, file_sha256(examples), metrics,
                                  examples=str(Path(examples).resolve()),
                                  training={**train, "folds": folds})
    heldout = (f", held-out accuracy {metrics['heldout_accuracy']:.3f}"
               if "heldout_accuracy" in metrics else "")
    err.print(f"registered [bold]{version.ref}[/]: {len(records)} examples, labels "
              f"{', '.join(model.labels)}, training accuracy {metrics['train_accuracy']:.3f}"
              f"{heldout}", highlight=False)
    print(version.ref)


@app.command("policy", epilog="Example:\n\n    genloop moderation policy")
@faced
def moderation_policy() -> None:
    """The policy in effect (the file's, or the default), validated, as JSON."""
    from genloop.safety.policy import load_policy, policy_path

    policy = load_policy()
    err.print(f"{policy_path()}{'' if policy_path().is_file() else ' (absent: the default)'} "
              f"{policy.digest}", highlight=False)
    print(json.dumps(policy.model_dump(mode="json"), ensure_ascii=False, indent=2))
