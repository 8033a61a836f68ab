"""Caffe solver semantics: LR policies at chosen iterations (hand-computed) and update rules against a
float64 transcription of Caffe's SGDSolver family. Tolerances: rtol 1e-4 on LRs (Caffe keeps base_lr
and gamma in float32), 1e-6 absolute on weights after a few float32 steps."""
import math
import warnings

import numpy as np
import pytest
import torch

from tools import load_caffe_net
from tools.run.errors import CaffeError
from tools.caffe.prototxt import read_solver
from tools.caffe.solver import CaffeSolver, learning_rate, param_groups

from .helpers import input_layer


@pytest.mark.parametrize("text,points", [
    ('lr_policy: "fixed" base_lr: 0.01', [(0, 0.01), (123456, 0.01)]),
    ('lr_policy: "step" base_lr: 0.01 gamma: 0.1 stepsize: 100000',
     [(0, 0.01), (99999, 0.01), (100000, 0.001), (350000, 1e-5)]),
    # exp: about x0.85 per epoch of 332 batches, as seed 003 reports
    ('lr_policy: "exp" base_lr: 0.01 gamma: 0.9995', [(0, 0.01), (1000, 0.0060645), (332, 0.0084701)]),
    ('lr_policy: "inv" base_lr: 0.01 gamma: 0.0001 power: 0.75', [(0, 0.01), (10000, 0.0059460)]),
    ('lr_policy: "multistep" base_lr: 0.01 gamma: 0.5 stepvalue: 10 stepvalue: 20 stepvalue: 40',
     [(9, 0.01), (10, 0.005), (25, 0.0025), (40, 0.00125), (1000, 0.00125)]),
    ('lr_policy: "poly" base_lr: 0.01 power: 2 max_iter: 100', [(0, 0.01), (50, 0.0025), (90, 0.0001)]),
    ('lr_policy: "sigmoid" base_lr: 0.01 gamma: -0.01 stepsize: 500', [(0, 0.0099331), (500, 0.005)]),
])
def test_lr_policies(text, points):
    sp = read_solver(text)
    for it, want in points:
        assert math.isclose(learning_rate(sp, it), want, rel_tol=1e-4), (it, learning_rate(sp, it), want)


def test_unknown_policy_and_type_are_clear_errors():
    with pytest.raises(CaffeError, match="unknown lr_policy 'cosine'"):
        CaffeSolver([torch.nn.Parameter(torch.zeros(1))], read_solver('lr_policy: "cosine" base_lr: 1'))
    with pytest.raises(CaffeError, match="unknown type 'Lion'"):
        CaffeSolver([torch.nn.Parameter(torch.zeros(1))], read_solver('type: "Lion" base_lr: 1'))
    with pytest.raises(CaffeError, match="needs a positive stepsize"):
        learning_rate(read_solver('lr_policy: "step" base_lr: 1'), 3)


def f32(x):
    return float(np.float32(x))


def caffe_reference(kind, w, grads, sp, lr_mult=1.0, decay_mult=1.0):
    """Caffe's ApplyUpdate in float64 for one parameter, one gradient per iteration."""
    w = np.array(w, np.float64)
    h = np.zeros_like(w)
    h2 = np.zeros_like(w)
    mom, delta, wd = f32(sp.momentum), f32(sp.delta), f32(sp.weight_decay) * decay_mult
    for it, g in enumerate(grads):
        rate = learning_rate(sp, it) * lr_mult
        g = np.array(g, np.float64) + wd * w
        if kind == "SGD":
            h = mom * h + rate * g
            step = h
        elif kind == "Nesterov":
            prev = h.copy()
            h = mom * h + rate * g
            step = (1 + mom) * h - mom * prev
        elif kind == "AdaGrad":
            h = h + g * g
            step = rate * g / (np.sqrt(h) + delta)
        elif kind == "RMSProp":
            d = f32(sp.rms_decay)
            h = d * h + (1 - d) * g * g
            step = rate * g / (np.sqrt(h) + delta)
        elif kind == "AdaDelta":
            h = mom * h + (1 - mom) * g * g
            upd = g * np.sqrt((h2 + delta) / (h + delta))
            h2 = mom * h2 + (1 - mom) * upd * upd
            step = rate * upd
        elif kind == "Adam":
            b2 = f32(sp.momentum2)
            h = mom * h + (1 - mom) * g
            h2 = b2 * h2 + (1 - b2) * g * g
            corr = math.sqrt(1 - b2 ** (it + 1)) / (1 - mom ** (it + 1))
            step = rate * corr * h / (np.sqrt(h2) + delta)
        w = w - step
    return w


GRADS = [[0.5, 0.25, -1.0], [0.1, -0.3, 0.2], [-0.4, 0.05, 0.7], [0.2, 0.2, 0.2]]


@pytest.mark.parametrize("kind,extra", [
    ("SGD", "momentum: 0.9"), ("Nesterov", "momentum: 0.9"), ("AdaGrad", ""),
    ("RMSProp", "rms_decay: 0.95"), ("AdaDelta", "momentum: 0.95 delta: 1e-6"),
    ("Adam", "momentum: 0.9 momentum2: 0.999"),
])
@pytest.mark.parametrize("lr_mult,decay_mult", [(1.0, 1.0), (2.0, 0.0)])
def test_update_rules_match_caffe(kind, extra, lr_mult, decay_mult):
    sp = read_solver(f'type: "{kind}" base_lr: 0.05 lr_policy: "step" gamma: 0.5 stepsize: 2 '
                     f'weight_decay: 0.01 {extra}')
    w0 = [1.0, -2.0, 0.5]
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = CaffeSolver([dict(params=[p], lr_mult=lr_mult, decay_mult=decay_mult)], sp)
    for g in GRADS:
        p.grad = torch.tensor(g)
        opt.step()
    want = caffe_reference(kind, w0, GRADS, sp, lr_mult, decay_mult)
    np.testing.assert_allclose(p.detach().numpy(), want, atol=1e-6, rtol=0)


def test_sgd_first_step_by_hand():
    sp = read_solver('lr_policy: "fixed" base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005')
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = CaffeSolver([p], sp)
    p.grad = torch.tensor([0.5, 0.25])
    opt.step()
    # V = lr * (g + wd * w) = 0.01 * [0.5005, 0.249]; W -= V
    np.testing.assert_allclose(p.detach().numpy(), [0.994995, -2.00249], atol=1e-7)


def test_caffe_sgd_keeps_lr_in_history_unlike_torch_sgd():
    sp = read_solver('base_lr: 0.1 lr_policy: "step" gamma: 0.1 stepsize: 1 momentum: 0.9')
    ours = torch.nn.Parameter(torch.zeros(1))
    theirs = torch.nn.Parameter(torch.zeros(1))
    opt = CaffeSolver([ours], sp)
    topt = torch.optim.SGD([theirs], lr=0.1, momentum=0.9)
    for it in range(2):
        for q in (ours, theirs):
            q.grad = torch.ones(1)
        opt.step()
        topt.param_groups[0]["lr"] = learning_rate(sp, it)
        topt.step()
    # Caffe: V1 = 0.1, V2 = 0.9*0.1 + 0.01 = 0.1 -> W = -0.2; torch rescales old momentum by the new lr
    assert abs(ours.item() + 0.2) < 1e-6
    assert abs(theirs.item() + 0.2) > 1e-3


def test_l1_regularisation_clip_and_iter_size():
    sp = read_solver('lr_policy: "fixed" base_lr: 1 weight_decay: 0.1 regularization_type: "L1" clip_gradients: 1 iter_size: 2')
    p = torch.nn.Parameter(torch.tensor([2.0, -3.0]))
    opt = CaffeSolver([p], sp)
    p.grad = torch.tensor([6.0, 8.0])  # sum over iter_size=2 passes; norm 10 -> clipped to 1
    opt.step()
    # clip: [0.6, 0.8]; / iter_size: [0.3, 0.4]; + 0.1 * sign(w): [0.4, 0.3]
    np.testing.assert_allclose(p.detach().numpy(), [1.6, -3.3], atol=1e-6)


def test_gradients_under_the_clip_threshold_are_left_bit_for_bit():
    sp = read_solver('lr_policy: "fixed" base_lr: 1 clip_gradients: 100')
    p = torch.nn.Parameter(torch.tensor([2.0, -3.0]))
    g = torch.tensor([0.1, 0.7])  # norm 0.707 < 100: Caffe does not touch it
    p.grad = g.clone()
    CaffeSolver([p], sp).step()
    assert torch.equal(p.detach(), torch.tensor([2.0, -3.0]) - g)
    z = torch.nn.Parameter(torch.tensor([1.0]))
    z.grad = torch.zeros(1)  # norm 0: no division by zero leaks in
    CaffeSolver([z], sp).step()
    assert torch.equal(z.detach(), torch.tensor([1.0]))


def test_resume_from_state_dict_continues_exactly():
    sp = read_solver('type: "Adam" base_lr: 0.01 momentum: 0.9 lr_policy: "exp" gamma: 0.9')
    torch.manual_seed(0)
    grads = [torch.randn(3) for _ in range(6)]

    def run(split):
        p = torch.nn.Parameter(torch.ones(3))
        opt = CaffeSolver([p], sp)
        for i, g in enumerate(grads):
            if i == split:
                state = {k: v for k, v in opt.state_dict().items()}
                weights = p.detach().clone()
                p = torch.nn.Parameter(weights)
                opt = CaffeSolver([p], sp)
                opt.load_state_dict(state)
            p.grad = g.clone()
            opt.step()
        return p.detach()

    assert torch.equal(run(split=None), run(split=3))


def test_param_groups_follow_prototxt_multipliers():
    text = input_layer({"data": (1, 3, 5, 5)}) + '''
    layer { name: "c" type: "Convolution" bottom: "data" top: "c"
      param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
      convolution_param { num_output: 2 kernel_size: 3 } }
    layer { name: "frozen" type: "InnerProduct" bottom: "c" top: "f"
      param { lr_mult: 0 } param { lr_mult: 0 } inner_product_param { num_output: 2 } }'''
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = load_caffe_net(text)
    groups = param_groups(net)
    assert sorted((g["lr_mult"], g["decay_mult"], len(g["params"])) for g in groups) == [(1, 1, 1), (2, 0, 1)]
    assert not net.layer("frozen").weight.requires_grad


@pytest.mark.parametrize("extra", ["weight_decay: 0.0005", "weight_decay: 0.0005 iter_size: 2", "weight_decay: 0"])
def test_foreach_sgd_is_bitwise_the_per_parameter_update(extra):
    sp = read_solver(f'base_lr: 0.05 momentum: 0.9 lr_policy: "step" gamma: 0.5 stepsize: 2 {extra}')
    torch.manual_seed(0)
    shapes = [(4, 3, 3, 3), (4,), (10, 36), (10,)]
    init = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(5)]
    results = []
    for foreach in (True, False):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        opt = CaffeSolver([dict(params=params[::2], lr_mult=1, decay_mult=1),
                           dict(params=params[1::2], lr_mult=2, decay_mult=0)], sp, foreach=foreach)
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            opt.step()
        results.append([p.detach().clone() for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*results))
