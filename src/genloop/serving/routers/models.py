"""``GET /v1/models`` and ``GET /v1/models/{model}``: every registered version, with its card."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from genloop.generation.chat import load_chat_template
from genloop.generation.kinds import generates
from genloop.models.modeldir import ModelDir
from genloop.serving.deps import CallerDep, StateDep
from genloop.serving.schemas import ModelList, ModelObject, errors
from genloop.store import ModelVersion

router = APIRouter(prefix="/v1", tags=["models"], responses=errors(401, 404, 429))


def model_object(version: ModelVersion, latest: bool, card: bool = False) -> ModelObject:
    """What a client needs to pick and drive a model; files are read only from its directory."""
    directory = ModelDir(Path(version.path))
    family, config = directory.family_config()
    what = generates(family)
    classes = directory.labels()  # image models: class names; text models have none
    template = load_chat_template(directory).model_dump() if what.chat else None
    return ModelObject(
        id=version.ref, created=int(version.created_at.timestamp()), name=version.name,
        version=version.version, family=version.family, modality=what.output,
        generative=family.generative, conditioning=family.conditioning, latest=latest, parent=version.parent,
        metrics=version.metrics, classes=classes, image_size=getattr(config, "image_size", None),
        chat_template=template,
        card=directory.card() if card else None,
    )


def _list(state: StateDep) -> ModelList:
    versions = state.store.list_models()
    newest: dict[str, int] = {}
    for v in versions:
        newest[v.name] = max(newest.get(v.name, 0), v.version)
    versions.sort(key=lambda v: v.created_at, reverse=True)
    return ModelList(data=[model_object(v, v.version == newest[v.name]) for v in versions])


@router.get("/models", summary="List models (OpenAI-compatible)")
async def list_models(state: StateDep, caller: CallerDep) -> ModelList:
    return await run_in_threadpool(_list, state)


@router.get("/models/{model}", summary="One model with its card; 'name' is its newest version")
async def retrieve_model(model: str, state: StateDep, caller: CallerDep) -> ModelObject:
    def one() -> ModelObject:
        version = state.store.resolve(model)
        latest = state.store.resolve(version.name).version == version.version
        return model_object(version, latest, card=True)

    return await run_in_threadpool(one)
