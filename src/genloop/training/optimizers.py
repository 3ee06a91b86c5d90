"""The optimizer a recipe names (``train.optimizer``): fused AdamW, or Muon beside AdamW.

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers"; torch.optim.Muon, the maintained
implementation) orthogonalises the momentum of each hidden weight matrix by Newton–Schulz
iterations before the step. It is meant for the 2-D matrices between the embedding and the
output head only, so with ``optimizer: muon`` the model's hidden linear weights go to Muon and
everything else (embeddings, the output head, norms, biases) to fused AdamW, as in
modded-nanoGPT. The pair is one ``torch.optim.Optimizer`` to the loop and to checkpoints: one list
of ``param_groups`` (each with an ``lr_scale`` the loop's schedule multiplies by: Muon's groups
run at ``muon_lr``, AdamW's at ``lr``), one ``step``, one ``zero_grad``, one ``state_dict``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from genloop.errors import RecipeError
from genloop.training.recipe import TrainConfig


def param_groups(model: nn.Module, weight_decay: float,
                 exclude: set[int] | None = None) -> list[dict[str, Any]]:
    """Decay matrices (linear and embedding weights), never norms or biases; parameters whose
    id is in ``exclude`` (another optimizer's) and frozen ones are left out."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set(exclude or ())
    for p in model.parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def hidden_matrices(model: nn.Module) -> list[torch.Tensor]:
    """The weights Muon takes: 2-D weights of linear layers, except an output head (a module
    named ``head`` or ``*_head``) and any weight an embedding shares (a tied head)."""
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    out: list[torch.Tensor] = []
    seen: set[int] = set()
    for name, module in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if not isinstance(module, nn.Linear) or last == "head" or last.endswith("_head"):
            continue
        w = module.weight
        if w.ndim == 2 and w.requires_grad and id(w) not in embedded and id(w) not in seen:
            seen.add(id(w))
            out.append(w)
    return out


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon for ``muon``'s parameters and AdamW for ``adamw``'s, seen as one optimizer.

    ``param_groups`` is Muon's groups then AdamW's (the same dicts, so setting a group's ``lr``
    sets the part's); ``state_dict`` numbers the parameters in that order, as one optimizer's
    would, so a checkpoint of the pair is an ordinary optimizer checkpoint."""

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer):
        params = [p for part in (muon, adamw) for g in part.param_groups for p in g["params"]]
        super().__init__(params, {})  # the hooks and bookkeeping of an Optimizer; groups are the parts'
        self.parts = (muon, adamw)
        self.param_groups = muon.param_groups + adamw.param_groups

    def _split(self) -> int:
        """How many parameters Muon holds: the index AdamW's are numbered from."""
        return sum(len(g["params"]) for g in self.parts[0].param_groups)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self.parts:
            part.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        muon, adamw = (part.state_dict() for part in self.parts)
        n = self._split()
        state = {**muon["state"], **{i + n: s for i, s in adamw["state"].items()}}
        groups = muon["param_groups"] + [{**g, "params": [i + n for i in g["params"]]}
                                         for g in adamw["param_groups"]]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        n, k = self._split(), len(self.parts[0].param_groups)
        groups, state = state_dict["param_groups"], state_dict["state"]
        if len(groups) != len(self.param_groups):
            raise ValueError("optimizer state has a different number of parameter groups")
        self.parts[0].load_state_dict({"state": {i: s for i, s in state.items() if int(i) < n},
                                       "param_groups": groups[:k]})
        self.parts[1].load_state_dict({
            "state": {int(i) - n: s for i, s in state.items() if int(i) >= n},
            "param_groups": [{**g, "params": [i - n for i in g["params"]]} for g in groups[k:]]})
        # ``load_state_dict`` gives each part new group dicts: ours must be those
        self.param_groups = self.parts[0].param_groups + self.parts[1].param_groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of ``cfg.optimizer`` over ``model``'s trainable parameters."""
    if cfg.optimizer == "adamw":
        # fused AdamW: one kernel for all parameters instead of a dozen ops per tensor
        return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas,
                                 fused=True)
    matrices = hidden_matrices(model)
    if not matrices:
        raise RecipeError("train.optimizer 'muon' found no hidden weight matrices in the model: "
                          "use train.optimizer=adamw")
    muon = torch.optim.Muon(
        [{"params": matrices, "lr_scale": cfg.muon_lr / cfg.lr}], lr=cfg.muon_lr,
        weight_decay=cfg.muon_weight_decay, momentum=cfg.muon_momentum, nesterov=True)
    rest = [g for g in param_groups(model, cfg.weight_decay, exclude={id(p) for p in matrices})
            if g["params"]]
    if not rest:
        return muon
    adamw = torch.optim.AdamW([{**g, "lr_scale": 1.0} for g in rest], lr=cfg.lr, betas=cfg.betas,
                              fused=True)
    return MuonWithAdamW(muon, adamw)
