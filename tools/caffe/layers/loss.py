"""Loss and metric layers: SoftmaxWithLoss, EuclideanLoss, MultinomialLogisticLoss, SigmoidCrossEntropyLoss,
HingeLoss, ContrastiveLoss, Accuracy."""
import math

from typing import Optional, Tuple

import torch

from .. import caffe_pb2 as pb
from .base import BuildContext, Layer, Shapes, Tops, as_index, canonical_axis, register

FLT_MIN = 1.1754943508222875e-38


def _label_layout(scores, labels, axis):
    """Scores as (outer*inner, C) and labels as a flat index vector, Caffe's outer/inner split."""
    c = scores.shape[axis]
    flat = scores.movedim(axis, -1).reshape(-1, c)
    return flat, as_index(labels.reshape(-1))


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(Layer):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 2, 2)
        if self.n_top > 1:  # softmax_loss_layer.cpp: the internal Softmax copies the layer's loss weights
            self.fail("Caffe refuses a second top (prob) here: its internal Softmax gets the layer's loss "
                      "weights for one top (layer.hpp: 'loss_weight must be unspecified or specified once per "
                      "top blob'); add a Softmax layer for the probabilities")
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
        if shapes[1] and outer * inner != math.prod(shapes[1]):
            self.fail(f"label count {math.prod(shapes[1])} must be outer*inner = {outer * inner} "
                      f"for scores {tuple(shapes[0])}")
        self.outer = outer

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> Tops:
        prob = torch.softmax(scores, self.axis)
        flat, lab = _label_layout(prob, labels, self.axis)
        valid = torch.ones_like(lab, dtype=torch.bool) if self.ignore is None else lab != self.ignore
        picked_index = torch.where(valid, lab, 0).clamp(0, flat.shape[1] - 1)[:, None]
        picked = flat.gather(1, picked_index)[:, 0]
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
        norm = torch.clamp_min(torch.as_tensor(norm, dtype=total.dtype, device=total.device), 1.0)
        loss = total / norm
        # Caffe's gradient is (prob - onehot) / norm even where prob(label) < FLT_MIN clamps the loss:
        # the value is the clamped loss, the gradient that of -log_softmax (their difference is 0 here)
        ls = -torch.log_softmax(scores, self.axis)
        flat_ls, _ = _label_layout(ls, labels, self.axis)
        surrogate = torch.where(valid, flat_ls.gather(1, picked_index)[:, 0], torch.zeros_like(nll)).sum() / norm
        loss = loss.detach() + (surrogate - surrogate.detach()) if loss.requires_grad else loss
        return (loss,)


@register("EuclideanLoss")
class EuclideanLoss(Layer):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 2, 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> Tops:
        return (((a - b.reshape(a.shape)) ** 2).sum() / (2 * a.shape[0]),)


@register("Accuracy")
class Accuracy(Layer):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 2, 2)
        p = lp.accuracy_param
        self.axis = canonical_axis(p.axis, len(shapes[0]), self)
        self.top_k = p.top_k
        self.ignore = p.ignore_label if p.HasField("ignore_label") else None
        if self.top_k > shapes[0][self.axis]:
            self.fail(f"top_k {self.top_k} exceeds the {shapes[0][self.axis]} classes")
        if self.n_top > 2:
            self.fail(f"has 1 or 2 tops (the accuracy, then one per class), the net gives {self.n_top}")

    def out_shapes(self, shapes: Shapes) -> Shapes:  # by hand: the per-class counts index by label values
        return [(), (shapes[0][self.axis],)][:self.n_top]

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> Tops:
        flat, lab = _label_layout(scores, labels, self.axis)
        valid = torch.ones_like(lab, dtype=torch.bool) if self.ignore is None else lab != self.ignore
        safe = torch.where(valid, lab, 0).clamp(0, flat.shape[1] - 1)
        true_score = flat.gather(1, safe[:, None])
        # Caffe counts the other classes scoring at least as high (accuracy_layer.cpp: >=, the label's
        # own score not counted): a tie counts against the label
        hit = ((flat >= true_score).sum(dim=1) - 1 < self.top_k) & valid
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


def with_gradient(value: torch.Tensor, *pairs: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """`value` in the forward pass, and for each (input, gradient) pair that gradient of it in the
    backward pass: Caffe's hand-written backward where it is not the derivative of its forward (a clamp,
    an epsilon), through autograd. The added term is exactly zero in the forward pass."""
    out = value.detach()
    for x, g in pairs:
        if x.requires_grad:
            s = (x * g.detach()).sum()
            out = out + (s - s.detach())
    return out


def _normalizer(mode, valid, count, outer):
    if mode == pb.LossParameter.FULL:
        n = count
    elif mode == pb.LossParameter.VALID:
        n = valid
    elif mode == pb.LossParameter.BATCH_SIZE:
        n = outer
    else:
        n = 1
    return max(1.0, float(n))


@register("MultinomialLogisticLoss")
class MultinomialLogisticLoss(Layer):
    """-mean log(max(p[label], 1e-20)) over the batch, on probabilities; Caffe's gradient is -1/max(p, 1e-20)
    at the label (multinomial_logistic_loss_layer.cpp)."""
    THRESHOLD = 1e-20

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 2, 2)
        if math.prod(shapes[1]) != shapes[0][0]:
            self.fail(f"one label per sample: {math.prod(shapes[1])} labels for {shapes[0][0]} samples")

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [()]

    def forward(self, prob: torch.Tensor, labels: torch.Tensor) -> Tops:
        flat = prob.reshape(prob.shape[0], -1)
        lab = as_index(labels.reshape(-1))
        picked = flat.gather(1, lab[:, None])[:, 0]
        kept = picked.clamp_min(self.THRESHOLD)
        n = prob.shape[0]
        loss = -torch.log(kept).sum() / n
        grad = torch.zeros_like(flat).scatter_(1, lab[:, None], (-1.0 / kept.detach() / n)[:, None])
        return (with_gradient(loss, (flat, grad)),)


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(Layer):
    """Cross-entropy of sigmoid(x) against targets in [0, 1], in Caffe's overflow-safe form; its gradient
    sigmoid(x) - target; ignore_label; normalization BATCH_SIZE unless loss_param says otherwise."""

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 2, 2)
        if math.prod(shapes[0]) != math.prod(shapes[1]):
            self.fail(f"scores {tuple(shapes[0])} and targets {tuple(shapes[1])} must have the same count")
        lpar = lp.loss_param
        self.ignore = lpar.ignore_label if lpar.HasField("ignore_label") else None
        if lpar.HasField("normalization"):
            self.mode = lpar.normalization
        elif lpar.HasField("normalize"):
            self.mode = pb.LossParameter.VALID if lpar.normalize else pb.LossParameter.BATCH_SIZE
        else:
            self.mode = pb.LossParameter.BATCH_SIZE

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [()]

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> Tops:
        t = target.reshape(x.shape).to(x.dtype)
        valid = torch.ones_like(x, dtype=torch.bool) if self.ignore is None else t != self.ignore
        pos = (x >= 0).to(x.dtype)
        terms = x * (t - pos) - torch.log1p(torch.exp(x - 2 * x * pos))
        norm = _normalizer(self.mode, int(valid.sum()), x.numel(), x.shape[0] if x.dim() else 1)
        loss = -torch.where(valid, terms, torch.zeros_like(terms)).sum() / norm
        grad = torch.where(valid, torch.sigmoid(x) - t, torch.zeros_like(x)) / norm
        return (with_gradient(loss, (x, grad)),)


@register("HingeLoss")
class HingeLoss(Layer):
    """One-vs-all hinge: sum over classes of max(0, 1 - s * x), s = +1 at the label and -1 elsewhere,
    L1 or squared (L2), over the batch size."""

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 2, 2)
        self.squared = lp.hinge_loss_param.norm == pb.HingeLossParameter.L2

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [()]

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> Tops:
        flat = x.reshape(x.shape[0], -1)
        sign = torch.full_like(flat, -1.0).scatter_(1, as_index(labels.reshape(-1))[:, None], 1.0)
        margin = torch.relu(1 - sign * flat)
        total = (margin * margin).sum() if self.squared else margin.sum()
        return (total / x.shape[0],)


@register("ContrastiveLoss")
class ContrastiveLoss(Layer):
    """Siamese loss on pairs (a, b, similar): d^2 for similar pairs, max(margin - d, 0)^2 for dissimilar
    ones (legacy_version: max(margin - d^2, 0)), over 2N; Caffe's gradient has 1e-4 added to d."""

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 3, 3)
        if tuple(shapes[0]) != tuple(shapes[1]):
            self.fail(f"both sides of a pair must have one shape, got {tuple(shapes[0])} and {tuple(shapes[1])}")
        p = lp.contrastive_loss_param
        self.margin, self.legacy = p.margin, p.legacy_version

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [()]

    def forward(self, a: torch.Tensor, b: torch.Tensor, similar: torch.Tensor) -> Tops:
        n = a.shape[0]
        diff = (a - b).reshape(n, -1)
        d2 = (diff * diff).sum(1)
        same = similar.reshape(-1) != 0
        if self.legacy:
            far = torch.clamp_min(self.margin - d2, 0)
            coeff = torch.where(far > 0, -torch.ones_like(d2), torch.zeros_like(d2))
        else:
            d = torch.sqrt(d2)
            gap = self.margin - d
            far = torch.clamp_min(gap, 0) ** 2
            coeff = torch.where(gap > 0, -gap / (d + 1e-4), torch.zeros_like(d2))
        loss = torch.where(same, d2, far).sum() / (2 * n)
        grad = torch.where(same, torch.ones_like(d2), coeff)[:, None] * diff / n
        return (with_gradient(loss, (a, grad.reshape(a.shape)), (b, -grad.reshape(b.shape))),)


@register("InfogainLoss")
class InfogainLoss(Layer):
    """SoftmaxWithLoss weighted by an infogain matrix H (from infogain_loss_param.source, a .binaryproto,
    or a third bottom): -sum_l H[label, l] log(max(p_l, 1e-20)) per item, its gradient
    p_l * sum(H[label]) - H[label, l] (infogain_loss_layer.cpp); ignore_label, normalization (VALID)."""

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 2, 3)
        p, lpar = lp.infogain_loss_param, lp.loss_param
        self.axis = canonical_axis(p.axis, len(shapes[0]), self)
        self.k = shapes[0][self.axis]
        outer, inner = math.prod(shapes[0][:self.axis]), math.prod(shapes[0][self.axis + 1:])
        if outer * inner != math.prod(shapes[1]):
            self.fail(f"{math.prod(shapes[1])} labels for {outer * inner} predictions")
        self.outer = outer
        self.ignore = lpar.ignore_label if lpar.HasField("ignore_label") else None
        self.mode = lpar.normalization
        if not lpar.HasField("normalization") and lpar.HasField("normalize"):
            self.mode = pb.LossParameter.VALID if lpar.normalize else pb.LossParameter.BATCH_SIZE
        self.register_buffer("infogain", None)
        if len(shapes) == 2:
            if not p.source:
                self.fail("needs infogain_loss_param.source (a .binaryproto H) or H as a third bottom")
            from ..preprocess import read_blobproto
            h = read_blobproto(p.source, "infogain matrix")
            if h.size != self.k * self.k:
                self.fail(f"{p.source}: H holds {h.size} values, {self.k}x{self.k} labels need {self.k ** 2}")
            self.infogain = torch.from_numpy(h.reshape(self.k, self.k).copy())
        elif math.prod(shapes[2]) != self.k * self.k:
            self.fail(f"H (bottom 2) holds {math.prod(shapes[2])} values, {self.k}x{self.k} labels need {self.k ** 2}")

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [(), tuple(shapes[0])][:max(self.n_top, 1)]

    def forward(self, scores: torch.Tensor, labels: torch.Tensor, h: Optional[torch.Tensor] = None) -> Tops:
        h = (self.infogain if h is None else h.detach().reshape(self.k, self.k)).to(scores.dtype)
        prob = torch.softmax(scores, self.axis)
        flat, lab = _label_layout(prob, labels, self.axis)
        valid = torch.ones_like(lab, dtype=torch.bool) if self.ignore is None else lab != self.ignore
        rows = h[torch.where(valid, lab, 0).clamp(0, self.k - 1)]  # H[label] per item
        rows = torch.where(valid[:, None], rows, torch.zeros_like(rows))
        norm = _normalizer(self.mode, int(valid.sum()), lab.numel(), self.outer)
        loss = -(rows * torch.log(flat.clamp_min(MultinomialLogisticLoss.THRESHOLD))).sum() / norm
        grad = (flat * rows.sum(1, keepdim=True) - rows) / norm
        grad = grad.reshape(*scores.movedim(self.axis, -1).shape).movedim(-1, self.axis)
        return (with_gradient(loss, (scores, grad)), prob)[:max(self.n_top, 1)]
