"""The training loop: token-count batches, accumulation, Adam with the paper's
schedule, validation, atomic checkpoints, exact resume, clean interruption."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from .. import checkpoint
from ..data.dataset import TokenPairs, collate, token_batches
from ..data.prepare import load_summary
from ..distributed import DistInfo, all_reduce_sum, barrier, init_from_env, shutdown
from ..errors import TransformerMTError
from ..model import ModelConfig, Transformer
from ..progress import Progress, format_duration
from ..vocab import Vocabulary
from .config import TrainConfig
from .loss import SmoothedLossObjective
from .metrics import MetricsLog, describe_run, train_record
from .schedule import inverse_sqrt_lr
from .state import DATA_ORDER_FIELDS, StopRequest, TrainState, pick_device
from .tensorboard import TensorBoardLog
from .validation import greedy_bleu, validation_loss

log = logging.getLogger(__name__)


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        model_config: ModelConfig,
        data_dir: str | Path,
        save_dir: str | Path,
        resume: bool = False,
        dist: DistInfo | None = None,
    ) -> None:
        self.config = config
        self.data_dir, self.save_dir = Path(data_dir), Path(save_dir)
        self.dist = dist or DistInfo()
        self.device = pick_device(config.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        # fp16 needs loss scaling to keep small gradients representable.
        self.scaler = (
            torch.amp.GradScaler("cuda") if config.precision == "float16" else None
        )
        if config.threads:
            torch.set_num_threads(config.threads)
        self.summary = load_summary(self.data_dir)
        self.vocab = Vocabulary.load(self.data_dir / "spm.model")
        self.train_data = TokenPairs(self.data_dir, "train")
        self.valid_data = (
            TokenPairs(self.data_dir, "valid")
            if "valid" in self.summary["splits"]
            else None
        )
        self.update_freq = self._update_freq()
        self.state = TrainState()
        self._epoch_cache: tuple[int, list] | None = None
        self.stop = StopRequest()
        self._setup_model(model_config, resume)
        tensorboard = None
        if config.tensorboard and self.dist.is_main:
            tensorboard = TensorBoardLog(self.save_dir / "tensorboard", self.state.step)
        self.metrics = MetricsLog(self.save_dir / "metrics.jsonl", tensorboard)

    # ---- set-up ---------------------------------------------------------------

    def _update_freq(self) -> int:
        c = self.config
        if c.update_tokens:
            return max(
                1, math.ceil(c.update_tokens / (c.max_tokens * self.dist.world_size))
            )
        return c.update_freq

    def _setup_model(self, model_config: ModelConfig, resume: bool) -> None:
        torch.manual_seed(self.config.seed)
        if self.dist.is_main:
            checkpoint.clean_stale(self.save_dir)
        barrier(self.dist)
        # A damaged newest checkpoint falls back to the one before; only the
        # main process sets damaged ones aside.
        ckpt = (
            checkpoint.load_newest(self.save_dir, set_aside=self.dist.is_main)
            if resume
            else None
        )
        barrier(self.dist)
        if resume and ckpt is None:
            log.info(
                "no checkpoint in %s to resume from; starting fresh", self.save_dir
            )
        if ckpt is not None:
            checkpoint.check_vocab(ckpt, self.vocab, f"data directory {self.data_dir}")
            self.model = ckpt.build_model(self.device).train()
        else:
            model_config = model_config.replace(
                vocab_size=len(self.vocab), pad_id=self.vocab.pad_id
            )
            self.model = Transformer(model_config).to(self.device)
        c = self.config
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=0.0,
            betas=(c.adam_beta1, c.adam_beta2),
            eps=c.adam_eps,
            # one kernel over all parameters: on the CPU the default per-tensor
            # loop took about 7x longer per step (4 tensors of 2M parameters)
            fused=True,
        )
        if ckpt is not None:
            self._restore(ckpt)
        if self.dist.enabled:
            # Same initial weights on every rank (seeded above), but each rank
            # needs its own dropout stream.
            torch.manual_seed(c.seed * 7919 + self.dist.rank + self.state.step)
        # Model and loss as one module, so DDP sees the whole step.
        objective = SmoothedLossObjective(
            self.model, c.label_smoothing, compile_features=c.compile
        )
        self.wrapped = self.ddp = objective
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = self.ddp = DistributedDataParallel(objective, device_ids=ids)

    def _restore(self, ckpt: checkpoint.Checkpoint) -> None:
        tensors, saved = ckpt.training_state()
        checkpoint.restore_optimizer(self.optimizer, tensors, saved["optimizer_groups"])
        self.state = TrainState(**saved["state"])
        torch.set_rng_state(tensors["rng.torch"])
        if self.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        old = saved["config"]
        changed = [
            f for f in DATA_ORDER_FIELDS if old.get(f) != getattr(self.config, f)
        ]
        if changed or saved.get("world_size", 1) != self.dist.world_size:
            log.warning(
                "resuming with changed %s: training continues, but not on "
                "exactly the batches of the original run",
                ", ".join(changed) or "number of processes",
            )
        log.info(
            "resumed from %s at step %d (epoch %d)",
            ckpt.directory,
            self.state.step,
            self.state.epoch,
        )

    # ---- data -----------------------------------------------------------------

    def epoch_batches(self, epoch: int) -> list:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            data = self.train_data
            batches = token_batches(
                data.src_lens,
                data.tgt_lens,
                self.config.max_tokens,
                self.config.seed,
                epoch,
            )
            self._epoch_cache = (epoch, batches)
        return self._epoch_cache[1]

    def next_group(self) -> list | None:
        """This process's batches for the next update, or None at the end of an
        epoch. Every update consumes world_size * update_freq global batches; rank
        r takes its own contiguous share."""
        batches = self.epoch_batches(self.state.epoch)
        per_update = self.dist.world_size * self.update_freq
        start = self.state.epoch_position
        if start + per_update > len(batches):
            return None
        mine = batches[start + self.dist.rank * self.update_freq :][: self.update_freq]
        self.state.epoch_position += per_update
        batches = [collate(self.train_data, ids) for ids in mine]
        if self.device.type == "cuda":
            batches = [b.pin_memory() for b in batches]
        return [b.to(self.device) for b in batches]

    # ---- one update -----------------------------------------------------------

    def autocast(self):
        precision = self.config.precision
        if precision == "float32":
            return contextlib.nullcontext()
        if precision == "float16" and self.device.type != "cuda":
            raise TransformerMTError(
                "precision=float16 needs a CUDA device; use bfloat16"
            )
        dtype = torch.bfloat16 if precision == "bfloat16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def train_step(self, group: list) -> dict | None:
        """Accumulate gradients over ``group`` and take one Adam step. The loss is
        summed over tokens and divided by the update's target tokens over all
        processes, so the gradient does not depend on how batches are split."""
        ntokens = all_reduce_sum(sum(b.ntokens for b in group), self.dist)
        lr = inverse_sqrt_lr(
            self.state.step + 1,
            self.model.config.d_model,
            self.config.warmup,
            self.config.lr_scale,
        )
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = lr
        self.wrapped.train()
        sums = torch.zeros(2, dtype=torch.float64)
        for i, batch in enumerate(group):
            sync = not self.dist.enabled or i == len(group) - 1
            context = contextlib.nullcontext() if sync else self.ddp.no_sync()
            with context:
                with self.autocast():
                    loss, nll = self.wrapped(batch.src, batch.tgt_in, batch.tgt_out)
                scaled = loss * self.dist.world_size / ntokens
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            sums += torch.stack([loss.detach(), nll.detach()]).double().cpu()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.config.clip_norm or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if self.dist.enabled:
            torch.distributed.all_reduce(sums)
        if not torch.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler:
                self.scaler.update()  # lowers the loss scale
            return None
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.state.tokens_seen += int(ntokens)
        return {
            "loss": sums[0].item() / ntokens,
            "nll": sums[1].item() / ntokens,
            "lr": lr,
            "tokens": ntokens,
            "grad_norm": float(grad_norm),
        }

    # ---- validation -----------------------------------------------------------

    def validate(self) -> dict:
        """Loss and perplexity on the validation split; BLEU of greedy output on
        its first ``valid_bleu_sentences`` sentences."""
        result = validation_loss(
            self.model,
            self.valid_data,
            self.config.max_tokens,
            self.config.label_smoothing,
            self.device,
            self.autocast,
        )
        count = min(self.config.valid_bleu_sentences, len(self.valid_data))
        if count:
            references = self.data_dir / "valid.tgt.txt"
            result["valid_bleu"] = greedy_bleu(
                self.model, self.valid_data, references, self.vocab, count, self.device
            )
        return result

    # ---- checkpoints and metrics ----------------------------------------------

    def save(self, best: bool = False) -> None:
        if not self.dist.is_main:
            return
        tensors, groups = checkpoint.optimizer_tensors(self.optimizer)
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        meta = {
            "src_lang": self.summary["src_lang"],
            "tgt_lang": self.summary["tgt_lang"],
            "step": self.state.step,
        }
        training = {
            "tensors": tensors,
            "state": {
                "state": dataclasses.asdict(self.state),
                "optimizer_groups": groups,
                "config": dataclasses.asdict(self.config),
                "world_size": self.dist.world_size,
                "data_dir": str(self.data_dir),
            },
        }
        path = checkpoint.save(
            self.save_dir / f"checkpoint_{self.state.step:06d}",
            self.model,
            self.vocab,
            meta,
            training,
        )
        if best:
            checkpoint.save(self.save_dir / "best", self.model, self.vocab, meta)
        for old in checkpoint.step_checkpoints(self.save_dir)[: -self.config.keep_last]:
            checkpoint.remove(old)
        log.info("saved %s%s", path, " (new best)" if best else "")

    def write_metrics(self, record: dict) -> None:
        if self.dist.is_main:
            self.metrics.write(record)

    def validate_and_save(self) -> dict:
        record = {}
        if self.dist.is_main and self.valid_data is not None:
            record = self.validate()
            best = record["valid_loss"] < self.state.best_valid_loss
            if best:
                self.state.best_valid_loss = record["valid_loss"]
            self.write_metrics(
                {
                    "kind": "valid",
                    "step": self.state.step,
                    "epoch": self.state.epoch,
                    "elapsed": self.state.elapsed,
                    **record,
                }
            )
            log.info(
                "validation at step %d: %s",
                self.state.step,
                " | ".join(f"{k} {v:.3f}" for k, v in record.items()),
            )
            self.save(best=best)
        else:
            self.save()
        barrier(self.dist)
        return record

    # ---- the loop -------------------------------------------------------------

    def should_stop(self) -> str:
        return self.stop.reason or self.config.limit_reached(self.state)

    def eta(self, seconds_per_step: float) -> float | None:
        return self.config.seconds_left(self.state, seconds_per_step)

    def fit(self) -> dict:
        """Train until a stop condition; returns a summary of the run."""
        if self.dist.is_main:
            try:
                self.save_dir.mkdir(parents=True, exist_ok=True)
                self.metrics.trim(self.state.step)
            except OSError as exc:
                raise TransformerMTError(
                    f"cannot write to run directory {self.save_dir}: "
                    f"{exc.strerror or exc}"
                ) from None
        self._log_start()
        progress = Progress(
            log,
            self.config.max_steps or None,
            self.config.log_every,
            self.state.step,
            enabled=self.dist.is_main,
        )
        window = {"loss": 0.0, "nll": 0.0, "tokens": 0.0, "steps": 0, "time": 0.0}
        last_valid: dict = {}
        saved_step = -1
        self.stop.catch_signals()
        try:
            while not (reason := self.should_stop()):
                window = self._one_update(progress, window)
                if (
                    self.config.valid_every
                    and self.state.step % self.config.valid_every == 0
                    and saved_step != self.state.step
                ):
                    last_valid = self.validate_and_save()
                    saved_step = self.state.step
                elif (
                    self.config.save_every
                    and self.state.step % self.config.save_every == 0
                    and saved_step != self.state.step
                ):
                    self.save()
                    barrier(self.dist)
                    saved_step = self.state.step
        finally:
            self.stop.restore_signals()
            progress.close()
        if saved_step != self.state.step:  # every rank decides alike: no lone barrier
            last_valid = self.validate_and_save()
        log.info(
            "stopped: %s (step %d, %s of training)",
            reason,
            self.state.step,
            format_duration(self.state.elapsed),
        )
        return {
            "stop_reason": reason,
            "step": self.state.step,
            "epoch": self.state.epoch,
            "elapsed": self.state.elapsed,
            "tokens_seen": self.state.tokens_seen,
            "skipped_updates": self.state.skipped_updates,
            **last_valid,
        }

    def _one_update(self, progress: Progress, window: dict) -> dict:
        """Take the next update (or move to the next epoch) and account for it in
        the logging ``window``; returns the window to carry on with."""
        started = time.monotonic()
        group = self.next_group()
        if group is None:
            self.state.epoch += 1
            self.state.epoch_position = 0
            return window
        stats = self.train_step(group)
        self.state.elapsed += time.monotonic() - started
        window["time"] += time.monotonic() - started
        if stats is None:
            self._skipped_update()
            return window
        self._bad_in_a_row = 0
        window["loss"] += stats["loss"] * stats["tokens"]
        window["nll"] += stats["nll"] * stats["tokens"]
        window["tokens"] += stats["tokens"]
        window["steps"] += 1
        if self.state.step % self.config.log_every == 0:
            self._report(progress, window, stats)
            return dict.fromkeys(window, 0.0)
        return window

    def _log_start(self) -> None:
        if self.dist.is_main:
            log.info(
                describe_run(
                    self.model,
                    self.device,
                    self.config,
                    self.dist.world_size,
                    self.update_freq,
                    len(self.train_data),
                )
            )

    def _skipped_update(self) -> None:
        self.state.skipped_updates += 1
        if self.scaler is not None and self.scaler.get_scale() >= 1.0:
            log.info("fp16 overflow: loss scale lowered to %g", self.scaler.get_scale())
            return
        self._bad_in_a_row = getattr(self, "_bad_in_a_row", 0) + 1
        log.warning(
            "non-finite loss or gradient at step %d: update skipped (%d in a row)",
            self.state.step + 1,
            self._bad_in_a_row,
        )
        if self._bad_in_a_row >= self.config.max_bad_steps:
            raise TransformerMTError(
                f"{self._bad_in_a_row} updates in a row had a non-finite loss or "
                "gradient; stopped without saving. Lower lr_scale, raise warmup or "
                f"set clip_norm; the last good checkpoint in {self.save_dir} is intact"
            )

    def _report(self, progress: Progress, window: dict, stats: dict) -> None:
        eta = self.eta(window["time"] / max(window["steps"], 1))
        record, fields = train_record(self.state, window, stats, eta)
        self.write_metrics(record)
        progress.update(self.state.step, fields)


def train(
    config: TrainConfig,
    model_config: ModelConfig,
    data_dir,
    save_dir,
    resume: bool = False,
) -> dict:
    """Train a model on a prepared data directory, under torchrun or alone."""
    dist = init_from_env(pick_device(config.device).type)
    try:
        return Trainer(config, model_config, data_dir, save_dir, resume, dist).fit()
    finally:
        shutdown(dist)
