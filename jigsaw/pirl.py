"""PIRL's loss (Misra & van der Maaten 2020; VISSL's `nce_loss_with_memory`): a memory bank m of every training
image's embedding, NCE of g(tiles) and of f(image) against the image's own entry m_I and shared negatives,
L = lambda * NCE(g, m_I) + (1 - lambda) * NCE(f, m_I); the bank then moves to f: m <- 0.5 m + 0.5 f, renormalised.

NCE (the paper's eq. 3-4, VISSL's NCECriterion): with P(v, m) = exp(<v, m> / T) / Z, K negatives from N items,
  NCE = -log(P(v, m_I) / (P(v, m_I) + K/N)) - sum_k log((K/N) / (P(v, m_k) + K/N)),
averaged over the batch. Z is fixed once, at the first step, as VISSL does: the mean of exp(score / T) over that
step's first term (positives and negatives) times N.
InfoNCE (`loss_type="infonce"`, VISSL's loss_type cross_entropy): cross entropy of the positive among the 1 + K
scores / T, no Z. On small image sets NCE stalls where InfoNCE learns: the untrained net embeds every image alike,
the bank follows, and then each of the K near-identical negatives pushes at the full 1/T while the positive's pull
vanishes (measured in RESULTS.md, "PIRL's loss on small image sets").

Negatives: K = min(--pirl-negatives, N) bank entries drawn uniformly with replacement (VISSL's sampler) on the
stream (seed, 17, iteration), one set shared by the batch and both terms (VISSL draws a set per sample: at
32,000 negatives that gathers B x 32,001 x 128 floats per term, ~1 GB at batch 64). A sample's own entry is never
its negative (it is left out of its sum): VISSL's sampler rarely draws it from 1.28 M images, but from a bank of
N it is among K draws with probability 1 - (1 - 1/N)^K (63 % at K = N), and as a negative it caps the positive's
score at P = K/N. The sampler's state is the iteration, so a resumed run draws what the uninterrupted one would
have."""
import math

import torch
import torch.nn.functional as F

from tools.run.runtime import generator, seed_of, stream

EPS = float(torch.finfo(torch.float32).eps)  # VISSL's NCECriterion adds it to each denominator
LOSS_TYPES = ("nce", "infonce")


class MemoryBank:
    """Unit embeddings of the N training images, the fixed Z, and the loss's settings."""

    def __init__(self, n_items, dim, seed, temperature=0.07, momentum=0.5, negatives=32000, weight=0.5,
                 device="cpu", loss_type="nce"):
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"PIRL loss {loss_type!r}: expected one of {', '.join(LOSS_TYPES)}")
        stdv = 1.0 / math.sqrt(dim / 3)  # VISSL's initial uniform range, then normalised
        init = torch.rand(n_items, dim, generator=generator(seed_of(seed, 19))) * 2 * stdv - stdv
        self.memory = F.normalize(init, dim=1).to(device)
        self.z = -1.0  # fixed at the first step
        self.temperature, self.momentum, self.weight, self.seed = temperature, momentum, weight, seed
        self.negatives = min(negatives, n_items)
        self.loss_type = loss_type

    def draw_negatives(self, k):
        return torch.randint(0, len(self.memory), (self.negatives,), generator=stream(self.seed, 17, k))

    def loss(self, tiles_emb, image_emb, rows, negatives):
        """(loss, hits): hits counts images whose f(I) scores its own entry above every negative."""
        dtype = self.memory.dtype
        g, f = F.normalize(tiles_emb.to(dtype), dim=1), F.normalize(image_emb.to(dtype), dim=1)
        positive, negative = self.memory[rows], self.memory[negatives.to(self.memory.device)]
        own = negatives.to(rows.device)[None, :] == rows[:, None]  # (B, K): a sample's own entry drawn as negative
        scores_g = self._scores(g, positive, negative)
        if self.z < 0 and self.loss_type == "nce":
            self.z = float(scores_g.detach().div(self.temperature).exp().mean()) * len(self.memory)
        scores_f = self._scores(f, positive, negative)
        term = self.nce if self.loss_type == "nce" else self.info_nce
        loss = self.weight * term(scores_g, own) + (1 - self.weight) * term(scores_f, own)
        hits = (scores_f[:, 0] > scores_f[:, 1:].masked_fill(own, -2.0).max(1).values).sum()
        return loss, hits, f.detach()

    @staticmethod
    def _scores(v, positive, negative):
        """(B, 1 + K): the positive's cosine first, then the shared negatives'."""
        return torch.cat([(v * positive).sum(1, keepdim=True), v @ negative.t()], 1)

    def nce(self, scores, own=None):
        """The NCE of (B, 1 + K) scores; `own` (B, K) marks negatives that are the sample's own entry: left out."""
        p = scores.div(self.temperature).exp() / self.z
        prior = self.negatives / len(self.memory)  # K x P_noise, P_noise = 1/N
        pos = torch.log(p[:, 0] / (p[:, 0] + prior + EPS))
        neg = torch.log(prior / (p[:, 1:] + prior + EPS))
        if own is not None:
            neg = neg.masked_fill(own, 0.0)
        return -(pos + neg.sum(1)).mean()

    def info_nce(self, scores, own=None):
        """Cross entropy of the positive (column 0) among (B, 1 + K) scores / T; `own` negatives left out."""
        logits = scores / self.temperature
        if own is not None:
            logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(own, float("-inf"))], 1)
        return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))

    @torch.no_grad()
    def update(self, rows, f):
        """m_I <- momentum m_I + (1 - momentum) f(I), renormalised (VISSL: update_mem_with_emb_index the image's)."""
        moved = self.memory[rows] * self.momentum + f.to(self.memory.device) * (1 - self.momentum)
        self.memory[rows] = F.normalize(moved, dim=1)

    def state_dict(self):
        return dict(memory=self.memory.cpu(), z=self.z, temperature=self.temperature, momentum=self.momentum,
                    negatives=self.negatives, weight=self.weight, seed=self.seed, loss_type=self.loss_type)

    def load_state_dict(self, state):
        if tuple(state["memory"].shape) != tuple(self.memory.shape):
            raise ValueError(f"memory bank {tuple(state['memory'].shape)}, expected {tuple(self.memory.shape)}")
        self.memory = state["memory"].to(self.memory.device, torch.float32).clone()
        self.z = float(state["z"])
        if state.get("loss_type", "nce") != self.loss_type:
            raise ValueError(f"memory bank of a {state.get('loss_type', 'nce')} run, expected {self.loss_type}")
