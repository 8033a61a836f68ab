"""Caffe's solvers in PyTorch: every lr_policy, and SGD/Nesterov/Adam/RMSProp/AdaGrad/AdaDelta updates
with lr_mult/decay_mult, L1/L2 regularisation, clip_gradients and iter_size, as Caffe's SGDSolver applies them."""
import math
from typing import Any, Callable, Dict, Iterable, List, Optional

import torch

from ..run.errors import CaffeError
from .prototxt import read_solver

TYPES = ("SGD", "Nesterov", "Adam", "RMSProp", "AdaGrad", "AdaDelta")
POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def learning_rate(sp: Any, it: int) -> float:
    """The learning rate Caffe uses at iteration `it` (0-based) for SolverParameter `sp`."""
    policy, base, gamma = sp.lr_policy, sp.base_lr, sp.gamma
    if not policy:
        raise CaffeError(f"solver: lr_policy is not set (Caffe aborts; expected one of {', '.join(POLICIES)})")
    if policy == "fixed":
        return base
    if policy == "step":
        if sp.stepsize <= 0:
            raise CaffeError("solver: lr_policy 'step' needs a positive stepsize")
        return base * gamma ** (it // sp.stepsize)
    if policy == "exp":
        return base * gamma ** it
    if policy == "inv":
        return base * (1 + gamma * it) ** (-sp.power)
    if policy == "multistep":
        return base * gamma ** _multistep(sp.stepvalue, it)
    if policy == "poly":
        if sp.max_iter <= 0:
            raise CaffeError("solver: lr_policy 'poly' needs a positive max_iter")
        return base * (1 - it / sp.max_iter) ** sp.power
    if policy == "sigmoid":
        return base / (1 + math.exp(-gamma * (it - sp.stepsize)))
    raise CaffeError(f"solver: unknown lr_policy '{policy}' (expected one of {', '.join(POLICIES)})")


def _multistep(stepvalues, it):
    """Caffe's current_step_ at iteration `it`: it advances at most once per iteration, when the
    iteration has reached the next stepvalue (sgd_solver.cpp), so repeated or unsorted values count
    one iteration at a time. Step k is taken at t_k = max(stepvalue[k], t_{k-1} + 1)."""
    steps, taken_at = 0, -1
    for v in stepvalues:
        taken_at = max(v, taken_at + 1, 0)
        if taken_at > it:
            break
        steps += 1
    return steps


def override(sp: Any, settings: Any, fields: Iterable[str]) -> Any:
    """`sp` with each of `fields` that `settings` gives (not None) put over the solver file's value."""
    for field in fields:
        if getattr(settings, field, None) is not None:
            setattr(sp, field, getattr(settings, field))
    return sp


def check_solver(sp: Any) -> None:
    """Reject settings Caffe would reject, with one clear line."""
    if sp.type not in TYPES:
        raise CaffeError(f"solver: unknown type '{sp.type}' (expected one of {', '.join(TYPES)})")
    learning_rate(sp, 0)
    if sp.regularization_type not in ("L1", "L2"):
        raise CaffeError(f"solver: regularization_type '{sp.regularization_type}' must be L1 or L2")
    if sp.iter_size < 1:
        raise CaffeError(f"solver: iter_size must be at least 1, got {sp.iter_size}")
    if sp.type in ("AdaGrad", "RMSProp") and sp.momentum != 0:
        raise CaffeError(f"solver: momentum cannot be used with {sp.type} (Caffe refuses it), got {sp.momentum:g}")


class CaffeSolver(torch.optim.Optimizer):
    """A Caffe solver. Param groups may carry `lr_mult` and `decay_mult` (default 1).

    `step()` applies one Caffe update at the solver's own iteration counter (`self.iter`,
    saved in state_dict) and then advances it. Gradients are the sums over `iter_size`
    forward/backward passes, as in Caffe; the update divides them by iter_size.
    """

    def __init__(self, params: Iterable[Any], solver_param: Any, foreach: bool = True) -> None:
        sp = read_solver(solver_param) if not hasattr(solver_param, "base_lr") else solver_param
        check_solver(sp)
        super().__init__(params, dict(lr_mult=1.0, decay_mult=1.0))
        self.sp = sp
        self.iter = 0
        self.foreach = foreach  # multi-tensor SGD kernels; False runs the per-parameter loop

    @property
    def lr(self) -> float:
        """The rate for the next step (before lr_mult)."""
        return learning_rate(self.sp, self.iter)

    def state_dict(self) -> Dict[str, Any]:
        out = super().state_dict()
        out["caffe_iter"] = self.iter
        return out

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self.iter = int(state_dict.pop("caffe_iter", 0))
        super().load_state_dict(state_dict)

    def _history(self, p, name):
        st = self.state[p]
        if name not in st:
            st[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return st[name]

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = closure() if closure is not None else None
        sp, rate = self.sp, self.lr
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if sp.clip_gradients >= 0 and params:
            norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params))
            # Caffe scales only when norm > clip; torch.where keeps that decision on the GPU (no sync)
            scale = torch.where(norm > sp.clip_gradients, sp.clip_gradients / norm, torch.ones_like(norm))
            for p in params:
                p.grad.mul_(scale)
        for group in self.param_groups:
            local_rate = rate * group["lr_mult"]
            local_decay = sp.weight_decay * group["decay_mult"]
            if self.foreach and sp.type == "SGD" and sp.regularization_type == "L2":
                self._sgd_foreach(group, local_rate, local_decay)
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if sp.iter_size > 1:
                    g.div_(sp.iter_size)
                if local_decay:
                    g.add_(p if sp.regularization_type == "L2" else torch.sign(p), alpha=local_decay)
                p.sub_(self._update(p, g, local_rate))
        self.iter += 1
        return loss

    def _sgd_foreach(self, group, local_rate, local_decay):
        """Caffe's SGD for a whole group in a few multi-tensor kernels (the same arithmetic, in the
        same order, as the per-parameter path)."""
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        if self.sp.iter_size > 1:
            torch._foreach_div_(grads, self.sp.iter_size)
        if local_decay:
            torch._foreach_add_(grads, params, alpha=local_decay)
        hist = [self._history(p, "history") for p in params]
        torch._foreach_mul_(hist, self.sp.momentum)
        torch._foreach_add_(hist, grads, alpha=local_rate)
        torch._foreach_sub_(params, hist)

    def _update(self, p, g, local_rate):
        sp = self.sp
        t = sp.type
        if t in ("SGD", "Nesterov"):
            h = self._history(p, "history")
            if t == "SGD":
                h.mul_(sp.momentum).add_(g, alpha=local_rate)
                return h
            prev = h.clone()
            h.mul_(sp.momentum).add_(g, alpha=local_rate)
            return h * (1 + sp.momentum) - prev * sp.momentum
        if t == "AdaGrad":
            h = self._history(p, "history")
            h.addcmul_(g, g)
            return local_rate * g / (h.sqrt() + sp.delta)
        if t == "RMSProp":
            h = self._history(p, "history")
            h.mul_(sp.rms_decay).addcmul_(g, g, value=1 - sp.rms_decay)
            return local_rate * g / (h.sqrt() + sp.delta)
        if t == "AdaDelta":
            h, hu = self._history(p, "history"), self._history(p, "update_history")
            h.mul_(sp.momentum).addcmul_(g, g, value=1 - sp.momentum)
            update = g * torch.sqrt((hu + sp.delta) / (h + sp.delta))
            hu.mul_(sp.momentum).addcmul_(update, update, value=1 - sp.momentum)
            return local_rate * update
        m, v = self._history(p, "m"), self._history(p, "v")
        b1, b2, step = sp.momentum, sp.momentum2, self.iter + 1
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        correction = math.sqrt(1 - b2 ** step) / (1 - b1 ** step)
        return local_rate * correction * m / (v.sqrt() + sp.delta)


def param_groups(net: Any) -> List[Dict[str, Any]]:
    """Parameter groups of a CaffeNet keyed by each param's (lr_mult, decay_mult) from the prototxt.

    Shared params appear once, with their owner's multipliers; lr_mult 0 params are left out.
    """
    groups = {}
    seen = set()
    for p in net.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        lr_mult, decay_mult = net.param_specs.get(id(p), (1.0, 1.0))
        if lr_mult == 0:
            continue
        groups.setdefault((lr_mult, decay_mult), []).append(p)
    return [dict(params=ps, lr_mult=lm, decay_mult=dm) for (lm, dm), ps in groups.items()]
