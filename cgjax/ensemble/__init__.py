"""A trained set of models for one cohort (being split by job into this package's modules)."""

from cgjax.ensemble.fit import (Group, Imputation, ModelSet, ModelSpec, TrainingRun, build_groups, group_arrays,
                                iter_sample_target, model_specs, new_training_run, sample_target,
                                steps_per_epoch, train_model_set, validate_group)

__all__ = ["Group", "Imputation", "ModelSet", "ModelSpec", "TrainingRun", "build_groups", "group_arrays",
           "iter_sample_target", "model_specs", "new_training_run", "sample_target", "steps_per_epoch",
           "train_model_set", "validate_group"]
