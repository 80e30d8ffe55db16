"""TRL's KTO and DPO trainers, fed rows that `feedback.py` tokenized exactly as training and serving do.

`_prepare_dataset` is TRL's documented step that turns text into `prompt_ids`/`completion_ids` (KTO) or
`prompt_ids`/`chosen_ids`/`rejected_ids` (DPO). Ours arrive tokenized already, and TRL's version would append an EOS
token after our end of turn and tokenize with the tokenizer's own special tokens added, so these subclasses keep the
rows as they are. KTO's KL term still needs its mismatched completions: each example borrows the completion of the
previous one in its batch, which is what TRL does for text rows. Checkpoints are staged and renamed into place like
every other run's (`StagedCheckpoints`).

Importing this module imports trl; `feedback.py` imports it only when a run starts.
"""

from __future__ import annotations

from trl import DPOTrainer, KTOTrainer

from cloneus.training.checkpoints import StagedCheckpoints


class TokenizedKTOTrainer(StagedCheckpoints, KTOTrainer):
    """`KTOTrainer` on rows with `prompt_ids`, `completion_ids` and `label`."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if not self.calculate_KL:
            return dataset

        def add_kl_completion_ids(batch):
            batch["KL_completion_ids"] = [batch["completion_ids"][-1]] + batch["completion_ids"][:-1]
            return batch

        return dataset.map(add_kl_completion_ids, batched=True, batch_size=args.per_device_train_batch_size)


class TokenizedDPOTrainer(StagedCheckpoints, DPOTrainer):
    """`DPOTrainer` on rows with `prompt_ids`, `chosen_ids` and `rejected_ids`."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset
