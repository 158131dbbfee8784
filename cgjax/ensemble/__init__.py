"""A trained set of models for one cohort: build, train, select, and sample from it.

One module per job, each importing only those before it:

  * :mod:`~cgjax.ensemble.spec`: which models a cohort gets (``ModelSpec``), their grouping by shape
    (``Group``, ``build_groups``) and the trained set (``ModelSet``);
  * :mod:`~cgjax.ensemble.arrays`: a group's stacked training / validation arrays (``group_arrays``);
  * :mod:`~cgjax.ensemble.fit`: the training loop, validation and per-model selection
    (``new_training_run``, ``train_model_set``, ``validate_group``);
  * :mod:`~cgjax.ensemble.sample`: checking a sampling request and sampling a target in chunks
    (``iter_sample_target``, ``sample_target``).

Everything here works in the standardised space of the train scalers; :mod:`cgjax.pipeline`
converts to and from the cohort's original scale.
"""

from cgjax.ensemble.arrays import group_arrays
from cgjax.ensemble.fit import TrainingRun, new_training_run, steps_per_epoch, train_model_set, validate_group
from cgjax.ensemble.sample import Imputation, iter_sample_target, sample_target
from cgjax.ensemble.spec import Group, ModelSet, ModelSpec, build_groups, model_specs

__all__ = ["Group", "Imputation", "ModelSet", "ModelSpec", "TrainingRun", "build_groups", "group_arrays",
           "iter_sample_target", "model_specs", "new_training_run", "sample_target", "steps_per_epoch",
           "train_model_set", "validate_group"]
