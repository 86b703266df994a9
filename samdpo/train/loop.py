"""The epoch loop every trainer runs (stage 1, stage 2, the U-Net baseline).

A trainer supplies its step (one optimiser step's loss and summed quantities), its :class:`Loop`
(schedule, logged columns, panels, what ``settings.json`` holds) and its :class:`Training` (model,
optimiser, scheduler, device). The loop owns the rest: epoch ``e``'s order drawn from
``default_rng(seed * 1000 + e)``, the progress bar, one row per epoch (quantities averaged over the
epoch's samples, learning rate, seconds, throughput), the epoch checkpoint and its resume (keyed on
the :func:`~samdpo.fingerprint.fingerprint` of the run's inputs), and the outputs: the weights,
the log as CSV and PNG, ``settings.json``, the checkpoint removed. Under ``torchrun`` each process
takes its shard of an epoch, the logged sums are totalled over processes and only the main process
prints and writes files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from samdpo import atomic
from samdpo.fingerprint import fingerprint, spec_hash
from samdpo.train import distributed
from samdpo.train.distributed import Place
from samdpo.train.history import plot_history, resume, save_epoch, write_history
from samdpo.train.model_folder import CHECKPOINT, LOSS_CSV, LOSS_PNG, SETTINGS, WEIGHTS
from samdpo.train.selection import VALIDATION_COLUMN, Selection, SelectionState, due, stop_reason, summary

Row = dict[str, Any]
ONE_PROCESS, CPU = Place(), torch.device("cpu")
#: ``step(chosen, rng) -> (loss, sums, count)``: the loss to descend, each logged column's sum over the
#: step's ``count`` samples (Python floats), for the items ``chosen`` of the epoch's order.
Step = Callable[[np.ndarray, np.random.Generator], tuple[torch.Tensor, Mapping[str, float], int]]


@dataclass(frozen=True)
class Loop:
    """What a trainer's epochs are and what they write.

    Attributes:
        out: folder of the checkpoint and the outputs.
        epochs: the last epoch; seed: epoch ``e`` draws from ``default_rng(seed * 1000 + e)``.
        items: what an epoch permutes (sample indices); batch: items per step (and process).
        columns: the quantities a step sums, logged per epoch as their sum over the epoch's count.
        panels: the PNG's ``(title, columns, log scale)`` panels; plot_title: its title.
        written: history -> the mapping written to ``settings.json`` (with its ``settings_hash``).
        describe: row -> the line printed after the epoch (None: nothing).
        rate: the throughput column (samples per second; None: none).
        log_csv, log_png: the log's file names; log_fields: the CSV's columns (None: the rows' keys).
    """

    out: Path
    epochs: int
    seed: int
    items: Sequence[int] | np.ndarray
    batch: int
    columns: tuple[str, ...]
    panels: Sequence[tuple[str, Sequence[str], bool]]
    written: Callable[[list[Row]], Mapping[str, Any]]
    describe: Callable[[Row], str | None]
    rate: str | None = None
    plot_title: str = ""
    log_csv: str = LOSS_CSV
    log_png: str = LOSS_PNG
    log_fields: tuple[str, ...] | None = None


@dataclass
class Training:
    """What trains and where.

    Attributes:
        model: the module whose weights are written (and checkpointed as ``model``).
        optimizer: steps after every loss; scheduler: stepped after every epoch (None: constant lr).
        extra: further checkpointed state (name -> object with ``state_dict`` / ``load_state_dict``).
        device: where the steps run; place: this process among torchrun's (one process by default).
        progress: show the progress bar (the main process only).
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    device: torch.device = CPU
    place: Place = ONE_PROCESS
    progress: bool = True

    def states(self) -> dict[str, Any]:
        """The checkpointed objects by name."""
        states = {"model": self.model, "optimizer": self.optimizer}
        if self.scheduler is not None:
            states["scheduler"] = self.scheduler
        return {**states, **self.extra}


class GeneratorState:
    """A numpy ``Generator`` as a checkpoint entry, so that a resumed run draws what the whole run drew."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def state_dict(self) -> dict[str, Any]:
        return self.rng.bit_generator.state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = dict(state)


def adam_with_step_lr(model: torch.nn.Module, lr: float, step: int, gamma: float) -> tuple[torch.optim.Adam, Any]:
    """Adam over ``model``'s trainable parameters and a scheduler that multiplies its rate by ``gamma``
    every ``step`` epochs (stages 1 and 2)."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=gamma)


def train_epochs(
    loop: Loop,
    training: Training,
    step: Step,
    inputs: Mapping[str, Any],
    begin: Callable[[np.random.Generator], None] | None = None,
    selection: Selection | None = None,
) -> list[Row]:
    """Run ``loop.epochs`` epochs of ``step`` (resuming a checkpoint of the same ``inputs``); write the outputs.

    Args:
        loop: schedule and outputs; training: model, optimiser, device.
        step: see :data:`Step`; ``begin(rng)`` runs at every epoch's start, after the order is drawn.
        inputs: everything that determines the result (settings, data contents, initial weights):
            their fingerprint keys the checkpoint, so it is taken before anything trains or loads.
        selection: score on the validation split, keep the best epoch's weights and stop early
            (:mod:`samdpo.train.selection`); None: the last epoch's weights.

    Returns:
        One row per epoch: ``epoch``, the columns' means, ``lr`` (the epoch's), ``seconds``, the rate and,
        with a selection, ``val_dice`` on the scored epochs.
    """
    key = fingerprint(inputs)
    checkpoint, main = Path(loop.out) / CHECKPOINT, training.place.main
    Path(loop.out).mkdir(parents=True, exist_ok=True)
    best = SelectionState()
    states = {**training.states(), "best": best} if selection else training.states()
    history, first = resume(checkpoint, key, states, training.device, verbose=main)
    reason = "schedule"
    for epoch in range(first, loop.epochs + 1):
        cpu = time.process_time()
        history.append(_epoch(loop, training, step, begin, epoch))
        if training.scheduler is not None:
            training.scheduler.step()
        if selection and due(selection, epoch, loop.epochs):
            history[-1][VALIDATION_COLUMN] = float(selection.score())
            best.offer(epoch, history[-1][VALIDATION_COLUMN], training.model)
        best.cpu_s += time.process_time() - cpu
        if main:
            line = loop.describe(history[-1])
            if line:
                scored = VALIDATION_COLUMN in history[-1]
                print(line + (f", validation Dice {history[-1][VALIDATION_COLUMN]:.2f}" if scored else ""))
            save_epoch(checkpoint, epoch, key, history, states)
        reason = (stop_reason(selection, best, epoch) if selection else None) or reason
        if reason != "schedule":
            break
    chosen = None
    if selection:
        chosen = summary(selection, best, history, reason)
        if best.weights is not None:
            training.model.load_state_dict(best.weights)
        if main:
            print(f"chose epoch {best.epoch} of {chosen['epochs_run']}: validation Dice {best.score:.2f} ({reason})")
    write_outputs(loop, training.model, history, training.place, chosen)
    return history


def _epoch(
    loop: Loop, training: Training, step: Step, begin: Callable[[np.random.Generator], None] | None, epoch: int
) -> Row:
    """One epoch's steps and its row (sums totalled over the processes)."""
    rng = np.random.default_rng(loop.seed * 1000 + epoch)
    order = np.asarray(distributed.shard(rng.permutation(loop.items), training.place), dtype=np.int64)
    if begin is not None:
        begin(rng)
    sums, count, began = dict.fromkeys(loop.columns, 0.0), 0, time.perf_counter()
    bar = tqdm(
        range(0, len(order), loop.batch),
        desc=f"epoch {epoch}/{loop.epochs}",
        unit="step",
        disable=not (training.progress and training.place.main),
    )
    for start in bar:
        loss, step_sums, step_count = step(order[start : start + loop.batch], rng)
        training.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        training.optimizer.step()
        for name in sums:
            sums[name] += step_sums[name]
        count += step_count
    *summed, count = distributed.total([*sums.values(), count], training.place, training.device)
    seconds = time.perf_counter() - began
    row = {"epoch": epoch, **{name: value / count for name, value in zip(sums, summed)}}
    row |= {"lr": training.optimizer.param_groups[0]["lr"], "seconds": seconds}
    if loop.rate:
        row[loop.rate] = count / seconds
    return row


def write_outputs(
    loop: Loop, model: torch.nn.Module, history: list[Row], place: Place = ONE_PROCESS, chosen: Row | None = None
) -> None:
    """The weights, the log (CSV, PNG) and ``settings.json`` (with the ``selection`` summary ``chosen``, when the
    epoch was chosen on validation), each atomically, and the checkpoint removed (main process; the others wait
    for it and every process leaves the process group)."""
    from samdpo.sam.checkpoints import save_weights

    out = Path(loop.out)
    if place.main:
        out.mkdir(parents=True, exist_ok=True)
        save_weights(model, out / WEIGHTS)
        fields = loop.log_fields and (*loop.log_fields, VALIDATION_COLUMN) if chosen else loop.log_fields
        write_history(history, out / loop.log_csv, fields)
        panels = [*loop.panels, ("validation Dice (%)", [VALIDATION_COLUMN], False)] if chosen else loop.panels
        plot_history(history, panels, out / loop.log_png, title=loop.plot_title)
        written = {**loop.written(history), **({"selection": chosen} if chosen else {})}
        text = json.dumps({**written, "settings_hash": spec_hash(written)}, indent=2, sort_keys=True) + "\n"
        atomic.write_text(out / SETTINGS, text)
        (out / CHECKPOINT).unlink(missing_ok=True)
    distributed.barrier(place)
    distributed.finish(place)
