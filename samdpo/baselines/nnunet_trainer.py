"""nnU-Net's trainer with a short schedule (imports nnunetv2: loaded only by :mod:`samdpo.baselines.nnunet`).

nnU-Net's ``nnUNetTrainer`` trains 1000 epochs of 250 iterations, which a GPU does in a day and a CPU
in weeks. This subclass changes nothing but the number of epochs and of iterations per epoch (network,
loss, augmentation, optimiser and its polynomial learning-rate decay over the epochs are nnU-Net's), like
nnunetv2's own ``nnUNetTrainer_Xepochs`` variants, with the counts as settings. Its class name names the
trainer folder (``nnUNetTrainerShortSchedule__nnUNetPlans__2d``), so a short run is never mistaken for
nnU-Net's default one.
"""

from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerShortSchedule(nnUNetTrainer):  # noqa: N801  (nnU-Net's trainer naming)
    """``nnUNetTrainer`` whose schedule :meth:`set_schedule` sets before training starts."""

    def set_schedule(self, epochs: int, iterations_per_epoch: int, val_iterations_per_epoch: int) -> None:
        """Train ``epochs`` epochs of ``iterations_per_epoch`` batches, with ``val_iterations_per_epoch``
        pseudo-Dice batches each (the learning rate decays to 0 over ``epochs``: the optimiser is made later,
        when training starts)."""
        self.num_epochs = epochs
        self.num_iterations_per_epoch = iterations_per_epoch
        self.num_val_iterations_per_epoch = val_iterations_per_epoch
        self.print_to_log_file(
            f"samdpo short schedule: {epochs} epochs x {iterations_per_epoch} iterations "
            f"({val_iterations_per_epoch} validation iterations)"
        )
