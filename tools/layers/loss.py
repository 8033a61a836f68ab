"""Loss and metric layers: SoftmaxWithLoss, EuclideanLoss, Accuracy."""
import torch

from .. import caffe_pb2 as pb
from .base import Layer, as_index, canonical_axis, register

FLT_MIN = 1.1754943508222875e-38


def _label_layout(scores, labels, axis):
    """Scores as (outer*inner, C) and labels as a flat index vector, Caffe's outer/inner split."""
    c = scores.shape[axis]
    flat = scores.movedim(axis, -1).reshape(-1, c)
    return flat, as_index(labels.reshape(-1))


class _Loss(Layer):
    default_weight = 1.0

    def __init__(self, lp, shapes, ctx):
        super().__init__(lp, shapes, ctx)
        self.loss_weight = lp.loss_weight[0] if lp.loss_weight else self.default_weight


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(_Loss):
    def __init__(self, lp, shapes, ctx):
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 2, 2)
        self.axis = canonical_axis(lp.softmax_param.axis, len(shapes[0]), self)
        lpar = lp.loss_param
        self.ignore = lpar.ignore_label if lpar.HasField("ignore_label") else None
        mode = lpar.normalization
        if not lpar.HasField("normalization") and lpar.HasField("normalize"):
            mode = pb.LossParameter.VALID if lpar.normalize else pb.LossParameter.BATCH_SIZE
        self.mode = mode
        outer = 1
        for d in shapes[0][:self.axis]:
            outer *= d
        inner = 1
        for d in shapes[0][self.axis + 1:]:
            inner *= d
        if shapes[1] and outer * inner != _count(shapes[1]):
            self.fail(f"label count {_count(shapes[1])} must be outer*inner = {outer * inner} "
                      f"for scores {tuple(shapes[0])}")
        self.outer = outer

    def forward(self, scores, labels):
        prob = torch.softmax(scores, self.axis)
        flat, lab = _label_layout(prob, labels, self.axis)
        valid = torch.ones_like(lab, dtype=torch.bool) if self.ignore is None else lab != self.ignore
        picked = flat.gather(1, torch.where(valid, lab, 0).clamp(0, flat.shape[1] - 1)[:, None])[:, 0]
        nll = -torch.log(picked.clamp_min(FLT_MIN))
        total = torch.where(valid, nll, torch.zeros_like(nll)).sum()
        n = lab.numel()
        if self.mode == pb.LossParameter.FULL:
            norm = float(n)
        elif self.mode == pb.LossParameter.VALID:
            norm = valid.sum().to(total.dtype) if self.ignore is not None else float(n)
        elif self.mode == pb.LossParameter.BATCH_SIZE:
            norm = float(self.outer)
        else:
            norm = 1.0
        loss = total / torch.clamp_min(torch.as_tensor(norm, dtype=total.dtype,
                                                       device=total.device), 1.0)
        return (loss, prob)[:max(self.n_top, 1)]


@register("EuclideanLoss")
class EuclideanLoss(_Loss):
    def __init__(self, lp, shapes, ctx):
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 2, 2)

    def forward(self, a, b):
        return (((a - b.reshape(a.shape)) ** 2).sum() / (2 * a.shape[0]),)


@register("Accuracy")
class Accuracy(Layer):
    def __init__(self, lp, shapes, ctx):
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 2, 2)
        p = lp.accuracy_param
        self.axis = canonical_axis(p.axis, len(shapes[0]), self)
        self.top_k = p.top_k
        self.ignore = p.ignore_label if p.HasField("ignore_label") else None
        if self.top_k > shapes[0][self.axis]:
            self.fail(f"top_k {self.top_k} exceeds the {shapes[0][self.axis]} classes")

    def forward(self, scores, labels):
        flat, lab = _label_layout(scores, labels, self.axis)
        valid = torch.ones_like(lab, dtype=torch.bool) if self.ignore is None else lab != self.ignore
        safe = torch.where(valid, lab, 0).clamp(0, flat.shape[1] - 1)
        true_score = flat.gather(1, safe[:, None])
        # Caffe counts a hit when fewer than top_k classes score strictly higher (ties favour the label).
        hit = ((flat > true_score).sum(dim=1) < self.top_k) & valid
        count = valid.sum()
        acc = hit.sum().to(scores.dtype) / count.clamp_min(1).to(scores.dtype)
        if self.n_top < 2:
            return (acc,)
        c = flat.shape[1]
        per_class = torch.zeros(c, dtype=scores.dtype, device=scores.device)
        totals = torch.zeros(c, dtype=scores.dtype, device=scores.device)
        totals.index_add_(0, safe[valid], torch.ones_like(safe[valid], dtype=scores.dtype))
        per_class.index_add_(0, safe[hit], torch.ones_like(safe[hit], dtype=scores.dtype))
        return (acc, per_class / totals.clamp_min(1))


def _count(shape):
    n = 1
    for d in shape:
        n *= d
    return n
