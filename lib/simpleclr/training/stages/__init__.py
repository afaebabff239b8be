"""The stages a command runs: :mod:`.pretrain` (any method), :mod:`.supervised` (from scratch, or
fine-tuning an encoder) and :mod:`.linear_eval` (the linear protocol on frozen features). Each
starts the same way (:func:`simpleclr.training.trainer.open_run`: a finished run's result, a
launcher, or the run folder's lock) and writes one run folder."""
