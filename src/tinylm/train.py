"""The one training loop: pre-training and fine-tuning both run through `Trainer.fit`.

It owns what every run needs — device and precision, AdamW with decoupled weight decay (not on
biases/LayerNorm), linear warm-up + decay, gradient accumulation and clipping, seeded data order,
progress bar, JSON-lines metrics, periodic evaluation, atomic checkpoints and exact resume — and
delegates the loss and evaluation to an `Objective`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from tinylm import distributed
from tinylm.config import TrainConfig
from tinylm.data.tokens import TokenData
from tinylm.device import bf16_supported, pick_device
from tinylm.distributed import Dist
from tinylm.errors import CheckpointError, ConfigError, TinylmError, TrainingDiverged
from tinylm.objectives import Objective
from tinylm.perf import tune_cpu_allocator
from tinylm.predict import autocast
from tinylm.randomness import activate, row_seed, rows_of
from tinylm.runs import RunDir


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices (linear, embedding, conv); none on biases, LayerNorm and BatchNorm."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    betas = (cfg.beta1, cfg.beta2)
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.adam_eps, fused=True)
    except (RuntimeError, TypeError):  # fused kernel unavailable for this device/dtype
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.adam_eps, foreach=True)


def lr_lambda(cfg: TrainConfig, total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    """Linear warm-up then linear decay to 0, counted in steps or (the paper's code) in epochs."""
    if cfg.schedule_unit == "epoch":
        total_units = max(1, math.ceil(total_steps / steps_per_epoch))

        def unit(step: int) -> int:
            return step // steps_per_epoch
    else:
        total_units = total_steps

        def unit(step: int) -> int:
            return step

    warm = cfg.warmup_steps

    def f(step: int) -> float:
        u = unit(step)
        if u < warm:
            return u / max(1, warm)
        return max(0.0, (total_units - u) / max(1, total_units - warm))

    return f


@dataclass
class StepStats:
    """Loss, accuracy counts and tokens of one optimizer step, or summed over a logging window."""

    loss: float = 0.0
    correct: int = 0
    count: int = 0
    tokens: int = 0
    steps: int = 0
    t0: float = field(default_factory=time.perf_counter)

    def add(self, loss: float, correct: int, count: int, tokens: int) -> None:
        self.loss, self.correct, self.count, self.tokens = (
            self.loss + loss,
            self.correct + correct,
            self.count + count,
            self.tokens + tokens,
        )

    def merge(self, other: StepStats) -> None:
        self.add(other.loss, other.correct, other.count, other.tokens)
        self.steps += 1


@dataclass
class Progress:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    tokens: int = 0
    examples: int = 0
    seconds: float = 0.0  #: wall time of the training kept so far, over every resumed segment
    eval_seconds: float = 0.0  #: the part of `seconds` spent in evaluations
    #: this process's CPU time (all its threads) over the same span: what pauses (SIGSTOP) and other work
    #: on the machine do not inflate
    cpu_seconds: float = 0.0
    #: how each segment (a start, then each resume) computed its steps: from step, processes, grad_accum
    segments: list[dict[str, int]] = field(default_factory=list)
    #: training ended before its budget because `Trainer.stop_when` said so (fine-tuning's patience)
    stopped: bool = False


class Trainer:
    """Run `objective` over `data` with the settings in `cfg`, writing everything to `run`."""

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        data: TokenData,
        cfg: TrainConfig,
        run: RunDir,
        evaluate: Callable[[nn.Module], dict[str, Any]] | None = None,
        on_step: Callable[[Progress], None] | None = None,
        dist: Dist | None = None,
    ):
        self.cfg, self.dist = cfg, dist or Dist()
        parts = self.dist.world * cfg.grad_accum
        if cfg.batch_size % parts:
            msg = f"{cfg.batch_size} (the global batch) is not divisible by {self.dist.world} ranks"
            raise ConfigError([f"batch_size: {msg} × grad_accum {cfg.grad_accum}"])
        self.device = self.dist.device(pick_device(cfg.device))
        if cfg.precision == "bf16" and not bf16_supported(self.device):
            raise TinylmError(f"precision: bf16 is not supported on this {self.device.type} device; use fp32")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if self.device.type == "cpu":
            tune_cpu_allocator()
        self.model = model.to(self.device)
        self.forward_model: nn.Module = torch.compile(model) if cfg.compile else model  # type: ignore[assignment]
        self.objective, self.data, self.run = objective, data, run
        self.evaluate_fn, self.on_step = evaluate, on_step
        #: after each evaluation: True ends the training there (e.g. no better validation accuracy lately)
        self.stop_when: Callable[[dict[str, Any]], bool] | None = None
        self.steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
        self.total_steps = self._total_steps()
        self.optimizer = make_optimizer(model, cfg, self.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(cfg, self.total_steps, self.steps_per_epoch)
        )
        self.progress = Progress()
        self._clock, self._cpu_clock = time.perf_counter(), time.process_time()
        self.resumed_eval: dict[str, Any] | None = None

    def _total_steps(self) -> int:
        c = self.cfg
        if c.max_steps:
            return c.max_steps
        if c.max_tokens:
            tokens_per_step = float(self.data.lengths.mean()) * c.batch_size
            return max(1, math.ceil(c.max_tokens / tokens_per_step))
        return max(1, math.ceil(c.epochs * self.steps_per_epoch))

    def epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.cfg.seed, epoch]).permutation(len(self.data))

    # ------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        return {
            "progress": vars(self.progress).copy(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "objective": self.objective.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load(self, state: dict[str, Any]) -> None:
        self.progress = Progress(**state["progress"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.objective.load_state_dict(state["objective"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def layout_note(self) -> str:
        """On resume: how the kept steps were computed, when this segment computes them otherwise."""
        last = self.progress.segments[-1] if self.progress.segments else None
        now = (self.dist.world, self.cfg.grad_accum)
        if last is None or (last["world"], last["grad_accum"]) == now:
            return ""
        return (
            f" (computed so far by {last['world']} process(es) × grad_accum {last['grad_accum']}, now "
            f"{now[0]} × {now[1]}: the same global batch of {self.cfg.batch_size}, the same result)"
        )

    def _count_seconds(self) -> None:
        """Add the wall time since the last count to `progress.seconds`, which checkpoints keep: a resumed
        run's train_seconds then covers every segment whose steps it kept, not only its last one."""
        now, now_cpu = time.perf_counter(), time.process_time()
        self.progress.seconds += now - self._clock
        self.progress.cpu_seconds += now_cpu - self._cpu_clock
        self._clock, self._cpu_clock = now, now_cpu

    def checkpoint(self) -> None:
        self._count_seconds()
        self.run.save_checkpoint(self.progress.step, self.model, self.state(), self.cfg.keep_checkpoints)

    def resume(self) -> bool:
        """Continue from the newest intact checkpoint (a corrupt one is reported and an older one used);
        without one, start over with an empty metrics log. Partial files of a killed write are removed."""
        self.run.remove_partial_files()
        failed: list[str] = []
        for target in self.run.checkpoint_candidates():
            try:
                self.load(self.run.load_checkpoint(target, self.model))
            except CheckpointError as e:
                failed.append(str(e))
                warnings.warn(f"{e}; trying an older checkpoint", stacklevel=2)
                continue
            self.run.truncate_metrics(self.progress.step)
            done = [r for r in self.run.read_metrics() if "eval" in r and r["step"] == self.progress.step]
            self.resumed_eval = done[-1]["eval"] if done else None
            return True
        if failed:
            raise CheckpointError(
                f"no intact checkpoint in {self.run.checkpoints} ({'; '.join(failed)}); delete that "
                "directory to restart the run from step 0"
            )
        self.run.truncate_metrics(0)
        return False

    # ------------------------------------------------------------ the loop

    def _eval(self) -> dict[str, Any]:
        if self.evaluate_fn is None:
            return {}
        t0 = time.perf_counter()
        wall = self.progress.seconds + (
            t0 - self._clock
        )  # the run's wall time so far, earlier evals included
        out = self.evaluate_fn(self.forward_model)  # the evaluation applies the run's precision itself
        self.progress.eval_seconds += time.perf_counter() - t0
        rec = {
            "step": self.progress.step,
            "epoch": self.progress.epoch,
            "tokens": self.progress.tokens,
            "wall_seconds": round(wall, 2),
            "eval": out,
            "eval_seconds": round(time.perf_counter() - t0, 2),
        }
        self.run.log(rec)
        return out

    def _eval_and_check(self) -> dict[str, Any]:
        """An evaluation, then `stop_when` asked whether training ends here."""
        out = self._eval()
        if self.stop_when is not None and out and self.stop_when(out):
            self.progress.stopped = True
        return out

    def _micro_batches(self, idx: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """This rank's micro-batches of a global batch, each with its rows' places in the global batch: the
        batch is split into ranks × grad_accum parts, rank r takes parts r·G … r·G+G−1 (one process: all of
        them). How it is split changes no result: every row's randomness is keyed by its place."""
        g, d = self.cfg.grad_accum, self.dist
        places = np.array_split(np.arange(len(idx)), g * d.world)[d.rank * g : (d.rank + 1) * g]
        return [(idx[pl], pl) for pl in places if len(pl)]

    def _sum_over_ranks(self, local: list[float]) -> list[float]:
        """Gradients and step statistics summed over the ranks (every rank sums the same gradient list:
        a rank that had no rows this step contributes zeros)."""
        for q in self.model.parameters():
            if q.requires_grad and q.grad is None:
                q.grad = torch.zeros_like(q)
        distributed.sum_([q.grad for q in self.model.parameters() if q.grad is not None], self.dist)
        totals = torch.tensor(local, dtype=torch.float64, device=self.device)
        distributed.sum_([totals], self.dist)
        return totals.tolist()

    def _optimizer_step(self, idx: np.ndarray) -> StepStats:
        """Forward and backward over this rank's micro-batches of `idx`, gradients summed over ranks and
        divided by the step's number of targets, clip, one optimizer step. Each row's randomness (dropout,
        masking) is drawn from a generator keyed by (seed, step, its place in the global batch), and each
        micro-batch's loss is a sum, so that a run depends on its global batch only, not on how many ranks
        or accumulation steps computed it."""
        c, p = self.cfg, self.progress
        torch.manual_seed(row_seed(c.seed, p.step, -1))  # anything else random in a step: once per step
        local = [0.0, 0, 0, 0]  # summed loss, correct, count, tokens of this rank's micro-batches
        for chunk, places in self._micro_batches(idx):
            batch = self.data.batch(chunk, self.device)
            rows = rows_of(c.seed, p.step, places.tolist(), self.data.ids.shape[1], p.step / self.total_steps)
            with activate(rows):
                with autocast(self.device, c.precision):
                    loss, stats = self.objective.loss(self.forward_model, batch)
                torch.autograd.backward(loss)
            local[0] += loss.item()
            local[1] += int(stats["correct"])
            local[2] += int(stats["count"])
            local[3] += int(batch["attention"].sum())
        if self.dist.world > 1:
            local = self._sum_over_ranks(local)
        count = max(1, int(local[2]))
        for q in self.model.parameters():
            if q.grad is not None:
                q.grad.div_(count)
        st = StepStats()
        st.add(float(local[0]) / count, int(local[1]), int(local[2]), int(local[3]))
        if not math.isfinite(st.loss):
            raise TrainingDiverged(
                f"loss became {st.loss} at step {p.step + 1} (epoch {p.epoch}, batch {p.batch_in_epoch}); "
                "lower lr or check the data; the last checkpoint is untouched"
            )
        if c.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        p.step += 1
        p.batch_in_epoch += 1
        p.tokens += st.tokens
        p.examples += len(idx)
        return st

    def _log_window(self, win: StepStats, bar: tqdm) -> None:
        p = self.progress
        rec = {
            "step": p.step,
            "total_steps": self.total_steps,
            "epoch": p.epoch,
            "loss": round(win.loss / win.steps, 5),
            "accuracy": round(win.correct / max(1, win.count), 5),
            "lr": self.scheduler.get_last_lr()[0],
            "tokens_per_s": round(win.tokens / (time.perf_counter() - win.t0), 1),
            "tokens": p.tokens,
        }
        self.run.log(rec)
        bar.set_postfix(
            loss=f"{rec['loss']:.3f}", acc=f"{rec['accuracy']:.3f}", tok_s=f"{rec['tokens_per_s']:.0f}"
        )

    def _epoch_continues(self) -> bool:
        p = self.progress
        return (
            p.batch_in_epoch < self.steps_per_epoch
            and p.step < self.total_steps
            and not self._token_budget_spent()
            and not p.stopped
        )

    def fit(self) -> dict[str, Any]:
        c, p = self.cfg, self.progress
        if p.step == 0:  # a fresh run: seed dropout (a resumed one restored the RNG state)
            torch.manual_seed(c.seed)
        p.segments = [s for s in p.segments if s["step"] < p.step]  # a segment that kept no step is gone
        p.segments.append({"step": p.step, "world": self.dist.world, "grad_accum": c.grad_accum})
        self.model.train()
        bar = tqdm(
            total=self.total_steps,
            initial=p.step,
            disable=not c.progress or not self.dist.main,
            unit="step",
            dynamic_ncols=True,
            leave=False,
        )
        win, self._clock, self._cpu_clock = StepStats(), time.perf_counter(), time.process_time()
        # resumed at a step already evaluated (e.g. killed after the final checkpoint): not again
        last_eval, evaluated_at = (self.resumed_eval, p.step) if self.resumed_eval is not None else ({}, -1)
        try:
            while p.step < self.total_steps and not self._token_budget_spent() and not p.stopped:
                order = self.epoch_order(p.epoch)
                while self._epoch_continues():
                    idx = order[p.batch_in_epoch * c.batch_size : (p.batch_in_epoch + 1) * c.batch_size]
                    win.merge(self._optimizer_step(idx))
                    if p.step % c.log_every == 0 or p.step == self.total_steps:
                        self._log_window(win, bar)
                        win = StepStats()
                    bar.update(1)
                    if c.eval_every and p.step % c.eval_every == 0:
                        last_eval, evaluated_at = self._eval_and_check(), p.step
                    if c.checkpoint_every and p.step % c.checkpoint_every == 0:
                        self.checkpoint()
                    if self.on_step is not None:
                        self.on_step(p)
                if p.batch_in_epoch >= self.steps_per_epoch:
                    p.epoch, p.batch_in_epoch = p.epoch + 1, 0
                    if not c.eval_every:
                        last_eval, evaluated_at = self._eval_and_check(), p.step
                    if not c.checkpoint_every:
                        self.checkpoint()
        finally:
            bar.close()
        if evaluated_at != p.step:  # the final model is always evaluated
            last_eval = self._eval()
        self.checkpoint()
        return {
            "steps": p.step,
            "epochs_completed": p.epoch,
            "tokens": p.tokens,
            "examples": p.examples,
            "train_seconds": round(p.seconds, 2),
            "eval_seconds": round(p.eval_seconds, 2),
            "cpu_seconds": round(p.cpu_seconds, 2),
            "segments": p.segments,
            "stopped_early": p.stopped,
            "final_eval": last_eval,
        }

    def _token_budget_spent(self) -> bool:
        return bool(self.cfg.max_tokens and self.progress.tokens >= self.cfg.max_tokens)
