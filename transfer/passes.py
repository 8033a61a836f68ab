"""One pass of a transfer model over a loader: a training epoch (Caffe solver steps, stopping at a signal) and an
evaluation (loss, accuracy or VOC07 mAP, confusion matrix), both under the run's precision."""
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tools.run.runtime import autocast, use_bf16


def task_loss(logits, y, reduction="mean"):
    """Cross-entropy over classes; for multi-label targets (1 / -1 / 0 = difficult) the binary cross-entropy of
    each label summed per image, difficult ones left out (a sigmoid head, as VOC07 classification is fine-tuned)."""
    if y.dim() == 1:
        return F.cross_entropy(logits, y, reduction=reduction)
    total = F.binary_cross_entropy_with_logits(logits, (y > 0).float(), weight=(y != 0).float(), reduction="sum")
    return total if reduction == "sum" else total / len(y)


class Score:
    """Correct predictions (classes), or every score and target for VOC07 mAP (multi-label): the accuracy
    columns of a multi-label run hold the 11-point mAP."""
    def __init__(self):
        self.hits, self.n, self.scores, self.targets = 0, 0, [], []

    def add(self, logits, y):
        self.n += len(y)
        if y.dim() == 1:
            self.hits += int((logits.argmax(1) == y).sum())
        else:
            self.scores.append(logits.detach().float().cpu())
            self.targets.append(y.cpu())

    def value(self):
        if not self.scores:
            return self.hits / max(self.n, 1), None
        from .voc07 import mean_ap
        m, aps = mean_ap(torch.cat(self.scores).numpy(), torch.cat(self.targets).numpy())
        return m, aps


@torch.no_grad()
def evaluate(model, loader, device, n_classes, bar=None, precision="auto"):
    """Loss per image, accuracy (mAP for multi-label targets, with each class's AP) and confusion matrix
    (classes only) over `loader` (a transient progress bar named `bar`), under `precision`'s autocast."""
    fast = use_bf16(precision, device)
    model.eval()
    loss, confusion, score = 0.0, torch.zeros(n_classes, n_classes, dtype=torch.long), Score()
    for x, y in tqdm(loader, desc=bar, leave=False, disable=bar is None):
        with autocast(device, fast):
            logits = model(to_device(x, device, fast)).float()
        loss += float(task_loss(logits, y.to(device), reduction="sum"))
        score.add(logits, y.to(device))
        if y.dim() == 1:
            confusion.index_put_((y, logits.argmax(1).cpu()), torch.ones_like(y), accumulate=True)
    accuracy, aps = score.value()
    return dict(loss=loss / max(score.n, 1), accuracy=accuracy, confusion=None if aps else confusion, aps=aps)


def to_device(x, device, fast=True):
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if fast and device.type == "cuda" and x.dim() == 4 else x


def train_epoch(model, solver, loader, device, bar, stop, fast):
    """One epoch: (mean loss, accuracy, each iteration's lr, batches run), under bf16 autocast when `fast`; it
    leaves after the batch during which a signal came (`stop`), with fewer batches run."""
    model.train()
    total, score, lrs = 0.0, Score(), []
    for x, y in loader:
        x, y = to_device(x, device, fast), y.to(device)
        with autocast(device, fast):
            logits = model(x).float()
        loss = task_loss(logits, y)
        lrs.append(solver.lr)
        loss.backward()
        solver.step()
        solver.zero_grad(set_to_none=True)
        total += loss.item() * len(y)
        score.add(logits, y)
        bar.update(1)
        if stop.signum is not None:
            break
    return total / score.n, score.value()[0], lrs, len(lrs)
