"""train.optimizer (AdamW, or Muon beside AdamW) and the sequence-length / batch-size warmup."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

from genloop.errors import RecipeError
from genloop.models.gpt import FAMILY
from genloop.models.modeldir import ModelDir
from genloop.store import Store
from genloop.training.batches import ImageBatches, TextBatches, warm_up, warmup_size
from genloop.training.loop import Progress, StopTraining, train
from genloop.training.optimizers import MuonWithAdamW, build_optimizer, hidden_matrices
from genloop.training.recipe import TrainConfig, load_recipe

from .test_loop import read_metrics


def _gpt(**options):
    torch.manual_seed(0)
    return FAMILY.build(FAMILY.make_config("tiny", vocab_size=30, block_size=16, **options))


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    for tied in (True, False):
        model = _gpt(tie_weights=tied)
        names = {id(p): n for n, p in model.named_parameters()}
        muon = {names[id(p)] for p in hidden_matrices(model)}
        assert muon == {f"blocks.{i}.{m}.weight" for i in range(2)
                        for m in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")}
        opt = build_optimizer(model, TrainConfig(optimizer="muon", lr=1e-3, muon_lr=0.05))
        assert isinstance(opt, MuonWithAdamW)
        muon_part, adamw_part = opt.parts
        assert isinstance(muon_part, torch.optim.Muon) and isinstance(adamw_part, torch.optim.AdamW)
        rest = {names[id(p)] for g in adamw_part.param_groups for p in g["params"]}
        assert rest == set(names.values()) - muon  # every parameter once, tied ones once
        assert ("head.weight" in rest) == (not tied)
        assert [g["lr_scale"] for g in opt.param_groups] == [pytest.approx(50.0), 1.0, 1.0]
        for g in opt.param_groups:  # the loop's lr line reaches both parts
            g["lr"] = 2e-4 * g["lr_scale"]
        assert muon_part.param_groups[0]["lr"] == pytest.approx(0.01)
        assert adamw_part.param_groups[0]["lr"] == pytest.approx(2e-4)


def test_adamw_is_todays_optimizer():
    opt = build_optimizer(_gpt(), TrainConfig())
    assert type(opt) is torch.optim.AdamW and opt.defaults["fused"]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_state_dict_round_trip_continues_identically():
    def steps(model, opt, n, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(n):
            x = torch.randint(0, 30, (4, 16), generator=g)
            FAMILY.loss(model, (x, x.roll(-1, 1)))["loss"].backward()
            opt.step()
            opt.zero_grad()

    cfg = TrainConfig(optimizer="muon")
    a = _gpt()
    opt_a = build_optimizer(a, cfg)
    steps(a, opt_a, 3, 1)
    saved_model = {k: v.clone() for k, v in a.state_dict().items()}
    saved = copy.deepcopy(opt_a.state_dict())  # state_dict holds the live tensors
    assert len(saved["state"]) == sum(len(g["params"]) for g in saved["param_groups"])
    steps(a, opt_a, 3, 2)
    b = _gpt()
    b.load_state_dict(saved_model)
    opt_b = build_optimizer(b, cfg)
    opt_b.load_state_dict(saved)
    assert opt_b.param_groups[0] is opt_b.parts[0].param_groups[0]
    steps(b, opt_b, 3, 2)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in saved_model)


@pytest.mark.parametrize("extra", [{}, {"seq_len_warmup_steps": 8, "seq_len_floor": 8,
                                        "batch_warmup_steps": 6, "batch_floor": 2}])
def test_a_resumed_muon_run_ends_where_an_uninterrupted_one_does(workspace, tiny_recipe, extra):
    recipe = tiny_recipe(steps=12, optimizer="muon", **extra)
    whole = train(recipe | {"name": "whole"})

    def stop_at_six(p: Progress) -> None:
        if p.phase == "checkpoint" and p.step == 6:
            raise StopTraining

    halves = recipe | {"name": "halves"}
    halves["train"] = recipe["train"] | {"checkpoint_every": 6}
    with pytest.raises(StopTraining):
        train(halves, on_progress=stop_at_six)
    run = Store().list_runs()[0]
    resumed = train(None, resume=run.id)
    a = load_file(str(ModelDir(Store().resolve(whole.model_ref).path).weights_file))
    b = load_file(str(ModelDir(Store().resolve(resumed.model_ref).path).weights_file))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [x["train/loss"] for x in read_metrics(whole.run_dir) if "train/loss" in x]
    assert losses[-1] < losses[0]


def test_muon_training_lowers_the_loss(workspace, tiny_recipe):
    result = train(tiny_recipe(steps=40, optimizer="muon", warmup_steps=0))
    losses = [x["train/loss"] for x in read_metrics(result.run_dir) if "train/loss" in x]
    assert sum(losses[-5:]) / 5 < losses[0] - 0.8


def test_recipe_fields_validate_and_old_recipes_keep_their_hash(corpus):
    from ..conftest import tiny_recipe_dict  # noqa: TID252

    with pytest.raises(RecipeError, match="train.optimizer"):
        load_recipe(tiny_recipe_dict(corpus, optimizer="sgd"))
    with pytest.raises(RecipeError, match="train.muon_momentum"):
        load_recipe(tiny_recipe_dict(corpus, muon_momentum=1.0))
    plain = load_recipe(tiny_recipe_dict(corpus))
    assert not {"optimizer", "muon_lr", "seq_len_warmup_steps"} & set(plain.frozen()["train"])
    muon = load_recipe(tiny_recipe_dict(corpus, optimizer="muon"))
    assert muon.frozen()["train"]["optimizer"] == "muon" and muon.hash() != plain.hash()


def test_warmup_sizes_double_from_the_floor_then_stay_full():
    sizes = [warmup_size(s, 9, 16, 64) for s in range(12)]
    assert sizes == [16] * 5 + [32] * 4 + [64] * 3  # 16, 32 share the warmup, then full
    assert [warmup_size(s, 0, 16, 64) for s in range(3)] == [64] * 3  # off
    assert warmup_size(0, 10, 64, 64) == 64 and warmup_size(0, 4, 100, 64) == 64


def test_text_batches_warm_up_and_other_kinds_refuse(tmp_path):
    class Data:  # what TextBatches reads of a text dataset
        train = list(range(500))
        val = list(range(200))

    cfg = TrainConfig(seq_len_warmup_steps=4, seq_len_floor=8, batch_warmup_steps=4, batch_floor=2)
    batches = warm_up(TextBatches(Data()), cfg)  # type: ignore[arg-type]
    config = FAMILY.make_config("tiny", vocab_size=500, block_size=32)
    shapes = [tuple(batches.train_batch(config, s, 0, seed=0, rank=0, batch=8,
                                        device=torch.device("cpu"))[0].shape) for s in range(5)]
    assert shapes == [(2, 8), (2, 8), (4, 16), (4, 16), (8, 32)]
    val = next(batches.val_batches(config, 1, 8, seed=0, device=torch.device("cpu")))
    assert val[0].shape == (8, 32)  # validation always reads full windows
    images = ImageBatches.__new__(ImageBatches)
    with pytest.raises(RecipeError, match="text data only"):
        warm_up(images, cfg)
    assert warm_up(images, TrainConfig()) is images
