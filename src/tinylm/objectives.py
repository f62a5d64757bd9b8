"""Training objectives that plug into the one training loop: MLM pre-training and classification.

An objective turns a batch of token arrays into (loss, counters) and evaluates a model on data;
the loop in train.py knows nothing else about it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinylm.data.tokens import TokenData, batches
from tinylm.predict import autocast, class_probabilities, evaluating
from tinylm.randomness import Rows, active
from tinylm.registry import CLS_ID, MASK_ID, PAD_ID, SEP_ID
from tinylm.sampled_loss import Candidates, draw, proposal


class _CrossEntropy(torch.autograd.Function):
    """Summed cross-entropy whose backward writes softmax − one-hot in one pass over the logits
    (autograd's log_softmax + nll_loss backward zero-fills, scatters and re-reads the whole
    (positions × vocab) matrix: three passes instead of one). The forward is logsumexp's own steps (row
    max, exp-sum, log) so that the row max it needs also gives the rows whose target logit is the
    largest: the training accuracy without a separate argmax pass over the vocabulary."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        top = logits.amax(-1)
        lse = torch.sub(logits, top[:, None]).exp_().sum(-1).log_().add_(top)
        picked = logits.gather(1, targets[:, None]).squeeze(1)
        hits = (picked >= top).sum()
        ctx.save_for_backward(logits, targets, lse)
        ctx.mark_non_differentiable(hits)
        return (lse - picked).sum(), hits

    @staticmethod
    def backward(ctx, grad: Tensor, _hits: Tensor) -> tuple[Tensor, None]:
        logits, targets, lse = ctx.saved_tensors
        g = torch.exp(logits - lse[:, None])
        g[torch.arange(len(targets), device=g.device), targets] -= 1.0
        return g.mul_(grad), None


def cross_entropy_and_hits(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Summed cross-entropy over rows (fp32 logits) and the number of rows whose target has the largest
    logit (ties count as hits). The sum of no rows is 0 (a micro-batch whose rows drew no MLM targets)."""
    total, hits = _CrossEntropy.apply(logits, targets)
    return total, hits


def cross_entropy(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy over rows (fp32 logits), 'mean' or 'sum'; equals `F.cross_entropy`, with a cheaper
    backward."""
    total, _ = cross_entropy_and_hits(logits, targets)
    return total if reduction == "sum" else total / len(targets)


class Objective:
    """Interface: `loss` for a training batch, `evaluate` over a dataset (no gradients).

    `loss` returns the *sum* of the batch's per-target losses and its counters, `count` being the number
    of targets: the trainer divides the gradients of a whole step by the step's total count, so that a
    step's loss does not depend on how its global batch was split into micro-batches."""

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def evaluate(
        self,
        model: nn.Module,
        data: TokenData,
        batch_size: int,
        device: torch.device,
        precision: str = "fp32",
    ) -> dict[str, float]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


#: Masked positions are padded to a multiple of this many rows for the vocabulary projection.
POSITION_BUCKET = 64


def bucketed(positions: Tensor) -> Tensor:
    """`positions` padded (with position 0, whose logits are dropped) to a multiple of POSITION_BUCKET.

    The number of masked tokens differs in every batch; each new row count of the (rows × vocab)
    matmul makes oneDNN (bf16 on CPU) build and cache a new primitive, several MB each with its
    reordered weights, up to 1024 of them: resident memory grew by ~10 MB a step (2/128 model,
    batch 64: 2.1 → 5.5 GiB in 400 steps). A handful of row counts keeps it flat."""
    pad = (-len(positions)) % POSITION_BUCKET
    return torch.cat([positions, positions.new_zeros(pad)]) if pad else positions


def padded_targets(targets: Tensor, rows: int) -> Tensor:
    """`targets` followed by -1 (ignored) up to `rows`."""
    return torch.cat([targets, targets.new_full((rows - len(targets),), -1)])


class MLMObjective(Objective):
    """BERT masking, re-drawn every batch: `mask_prob` of non-special tokens ([PAD]/[CLS]/[SEP] excluded)
    are selected; of those `mask_replace` → [MASK], `mask_random` → a uniform random id, the rest kept.
    The loss (cross-entropy) and accuracy count only the selected positions. With `mask_prob_start`, a
    training step's rate falls linearly from it to `mask_prob` over the run (evaluation: `mask_prob`).
    With `predict_prob` below a step's rate, each selected token enters that step's loss with probability
    `predict_prob` ÷ rate (corrupted in the input all the same): more corruption, no more loss rows.
    `fused`: the training loss through the model's fused projection + loss (`vocab_loss`), else the
    plain logits + `cross_entropy_and_hits`. With `window_start`, a training step's tokens attend only
    within ± `window_at(progress)` positions: from `window_start`, widening linearly to the whole sequence
    at `window_share` of the run, full attention after that and in evaluation."""

    def __init__(
        self,
        vocab_size: int,
        mask_prob: float = 0.15,
        mask_replace: float = 0.8,
        mask_random: float = 0.1,
        seed: int = 0,
        unigram: np.ndarray | None = None,
        mask_prob_start: float | None = None,
        fused: bool = True,
        predict_prob: float | None = None,
        window_start: int | None = None,
        window_share: float = 0.25,
        sampled: int | None = None,
        sampled_share: float = 1.0,
    ):
        self.vocab_size = vocab_size
        self.sampled, self.sampled_share = sampled, sampled_share
        self._proposal: Tensor | None = None
        self.window_start, self.window_share = window_start, window_share
        self.mask_prob, self.mask_replace, self.mask_random = mask_prob, mask_replace, mask_random
        self.mask_prob_start, self.fused, self.predict_prob = mask_prob_start, fused, predict_prob
        self.generator = torch.Generator().manual_seed(seed)
        self.unigram = None if unigram is None else torch.from_numpy(unigram)

    def mask(self, ids: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (masked inputs, flat selected positions, their original ids). Works on CPU tensors."""
        maskable = (ids != PAD_ID) & (ids != CLS_ID) & (ids != SEP_ID)
        selected = (torch.rand(ids.shape, generator=gen) < self.mask_prob) & maskable
        if not bool(selected.any()):  # tiny batches: always evaluate at least one token
            selected.view(-1)[maskable.view(-1).nonzero()[0]] = True
        action = torch.rand(ids.shape, generator=gen)
        random_ids = torch.randint(self.vocab_size, ids.shape, generator=gen)
        return self._apply(ids, selected, action, random_ids)

    def rate_at(self, progress: float) -> float:
        """The masking rate of a training step `progress` (step ÷ total steps) into the run."""
        if self.mask_prob_start is None:
            return self.mask_prob
        return self.mask_prob_start + (self.mask_prob - self.mask_prob_start) * min(1.0, max(0.0, progress))

    def window_at(self, progress: float, length: int) -> int | None:
        """The attention window (± positions) of a training step `progress` into the run over sequences of
        `length`; None: full attention."""
        if self.window_start is None or progress >= self.window_share:
            return None
        w = self.window_start + (length - self.window_start) * max(0.0, progress) / self.window_share
        return int(w) if int(w) < length - 1 else None

    def mask_rows(self, ids: Tensor, rows: Rows) -> tuple[Tensor, Tensor, Tensor]:
        """`mask` with every row drawn from its own generator (a training step's rows): a row's masks do
        not depend on the micro-batch it is in. A row may draw no target."""
        maskable = (ids != PAD_ID) & (ids != CLS_ID) & (ids != SEP_ID)
        row, rate = ids.shape[1:], self.rate_at(rows.progress)
        selected = (rows.rand(row) < rate) & maskable
        action = rows.rand(row)
        random_ids = rows.randint(self.vocab_size, row)
        predicted = None
        if self.predict_prob is not None and rate > self.predict_prob:
            predicted = selected & (rows.rand(row) < self.predict_prob / rate)
        return self._apply(ids, selected, action, random_ids, predicted)

    def _apply(
        self,
        ids: Tensor,
        selected: Tensor,
        action: Tensor,
        random_ids: Tensor,
        predicted: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Corrupts the `selected` tokens; the loss's positions are `predicted` (default: `selected`)."""
        inputs = ids.clone()
        to_mask = selected & (action < self.mask_replace)
        to_random = selected & (action >= self.mask_replace) & (action < self.mask_replace + self.mask_random)
        inputs[to_mask] = MASK_ID
        inputs[to_random] = random_ids[to_random]
        positions = (selected if predicted is None else predicted).view(-1).nonzero().squeeze(1)
        return inputs, positions, ids.view(-1)[positions]

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        device = batch["input_ids"].device
        rows = active()
        ids = batch["input_ids"].cpu()
        inputs, positions, targets = (
            self.mask_rows(ids, rows) if rows is not None else self.mask(ids, self.generator)
        )
        padded, count = bucketed(positions).to(device), targets.numel()
        window = None if rows is None else self.window_at(rows.progress, ids.shape[1])
        extra: dict[str, Any] = {} if window is None else {"window": window}
        if rows is not None and self.sampled and rows.progress < self.sampled_share:
            extra["candidates"] = self.candidates(rows)
        if self.fused or "candidates" in extra:  # padding rows get target -1: ignored
            loss, correct = model(
                inputs.to(device),
                batch["attention"],
                padded,
                targets=padded_targets(targets, len(padded)).to(device),
                **extra,
            )
        else:
            logits = model(inputs.to(device), batch["attention"], padded, **extra)[:count]
            loss, correct = cross_entropy_and_hits(logits.float(), targets.to(device))
        return loss, {"correct": int(correct), "count": count}

    def candidates(self, rows: Rows) -> Candidates:
        """The sampled softmax's candidates of a training step (drawn from the step's own generator, so
        every micro-batch of the step gets the same ones), from the unigram proposal."""
        if self._proposal is None:
            if self.unigram is None:
                raise ValueError("sampled softmax needs the corpus unigram (MLMObjective(unigram=...))")
            self._proposal = proposal(self.unigram)
        assert self.sampled is not None
        return draw(self._proposal, self.sampled, rows.step_generator())

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        data: TokenData,
        batch_size: int,
        device: torch.device,
        precision: str = "fp32",
        seed: int = 1234,
    ) -> dict[str, float]:
        """MLM loss/accuracy on held-out samples with a fixed masking seed (comparable across steps), and,
        when the objective has a unigram model, that trivial baseline's loss/accuracy on the same targets."""
        gen = torch.Generator().manual_seed(seed)
        total_loss, correct, count, all_targets = 0.0, 0, 0, []
        with evaluating(model):
            for batch in batches(data, batch_size, device):
                inputs, positions, targets = self.mask(batch["input_ids"].cpu(), gen)
                all_targets.append(targets)
                with autocast(device, precision):
                    padded = bucketed(positions).to(device)
                    logits = model(inputs.to(device), batch["attention"], padded)[: len(targets)].float()
                targets = targets.to(device)
                total_loss += F.cross_entropy(logits, targets, reduction="sum").item()
                correct += int((logits.argmax(-1) == targets).sum())
                count += targets.numel()
        out = {"mlm_loss": total_loss / count, "mlm_accuracy": correct / count}
        if self.unigram is not None:
            t = torch.cat(all_targets)
            out["unigram_loss"] = float(-self.unigram[t].double().mean())
            out["unigram_accuracy"] = float((t == int(self.unigram.argmax())).double().mean())
        return out

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def unigram_log_probs(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """Add-one smoothed unigram log-probabilities of the maskable tokens of a padded id array: the trivial
    MLM baseline, which predicts every masked token from corpus frequencies alone ([PAD]/[CLS]/[SEP],
    never masked, get none)."""
    counts = np.bincount(ids.ravel().astype(np.int64), minlength=vocab_size).astype(np.float64) + 1.0
    counts[[PAD_ID, CLS_ID, SEP_ID]] = 0.0
    with np.errstate(divide="ignore"):
        return np.log(counts / counts.sum()).astype(np.float32)


class ClassificationObjective(Objective):
    """Cross-entropy over the classifier's logits; evaluation gives accuracy, macro-F1 and the confusion
    matrix."""

    def __init__(self, num_labels: int):
        self.num_labels = num_labels

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        logits = model(batch["input_ids"], batch["attention"])
        loss = F.cross_entropy(logits.float(), batch["labels"], reduction="sum")
        correct = (logits.argmax(-1) == batch["labels"]).sum()
        return loss, {"correct": correct, "count": batch["labels"].numel()}

    def evaluate(
        self,
        model: nn.Module,
        data: TokenData,
        batch_size: int,
        device: torch.device,
        precision: str = "fp32",
    ) -> dict[str, float]:
        probs = class_probabilities(model, data, batch_size, device, precision)
        assert data.labels is not None, "classification data needs labels"
        return classification_metrics(probs.argmax(1), data.labels, self.num_labels)


class DistillationObjective(ClassificationObjective):
    """Knowledge distillation (Hinton et al. 2015): alpha × the labels' cross-entropy + (1 − alpha) × T² ×
    KL(teacher ‖ student) of the temperature-T softmaxes, per example (summed, as the classification loss);
    the batch carries the teacher's temperature-T probabilities as `soft`. A row labelled −1 (unlabelled
    text) adds only the soft term. Evaluation as classification."""

    def __init__(self, num_labels: int, temperature: float, alpha: float):
        super().__init__(num_labels)
        self.temperature, self.alpha = temperature, alpha

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        logits = model(batch["input_ids"], batch["attention"]).float()
        t = self.temperature
        labels = batch["labels"]
        hard = F.cross_entropy(logits, labels, reduction="sum", ignore_index=UNLABELLED)
        soft = F.kl_div(F.log_softmax(logits / t, -1), batch["soft"], reduction="sum") * t * t
        labelled = labels != UNLABELLED
        correct = ((logits.argmax(-1) == labels) & labelled).sum()
        return self.alpha * hard + (1 - self.alpha) * soft, {"correct": correct, "count": labelled.sum()}


#: The label of an unlabelled distillation example: it is learnt from the teacher's soft targets only.
UNLABELLED = -1


#: The largest label count whose full confusion matrix is written (once, with the final results); above
#: it the matrix (labels² cells) is left out and `top_confusions` stands in for it.
CONFUSION_MATRIX_MAX_LABELS = 100
TOP_CONFUSIONS = 10


def classification_metrics(
    pred: np.ndarray, gold: np.ndarray, num_labels: int, matrix: bool = False
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class accuracy (recall) and the most frequent confusions, in O(examples +
    labels) memory; with `matrix`, also the full confusion matrix when the labels are at most
    `CONFUSION_MATRIX_MAX_LABELS`."""
    support = np.bincount(gold, minlength=num_labels)
    predicted = np.bincount(pred, minlength=num_labels)
    tp = np.bincount(gold[pred == gold], minlength=num_labels).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
        per_class = np.where(support > 0, tp / support, 0.0)
    wrong = pred != gold
    pairs, counts = np.unique(gold[wrong].astype(np.int64) * num_labels + pred[wrong], return_counts=True)
    top = np.lexsort((pairs, -counts))[:TOP_CONFUSIONS]  # most frequent first, then by (gold, predicted)
    out: dict[str, Any] = {
        "accuracy": float(tp.sum() / len(gold)),
        "macro_f1": float(f1.mean()),
        "per_class_accuracy": per_class.round(4).tolist(),
        "top_confusions": [
            {
                "gold": int(pairs[i] // num_labels),
                "predicted": int(pairs[i] % num_labels),
                "count": int(counts[i]),
            }
            for i in top
        ],
    }
    if matrix and num_labels <= CONFUSION_MATRIX_MAX_LABELS:
        cm = np.bincount(gold.astype(np.int64) * num_labels + pred, minlength=num_labels * num_labels)
        out["confusion_matrix"] = cm.reshape(num_labels, num_labels).tolist()
    return out
