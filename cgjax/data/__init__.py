"""Cohorts: the data model, cohort files, the split and scaling."""

from cgjax.data.cohort import (CLINICAL_COLUMNS, DEFAULT_MODALITIES, SPLITS, Cohort, from_arrays,
                               normalise_clinical, validate)
from cgjax.data.io import (align_features, check_modalities, describe_cohort, describe_modalities, read_cohort,
                           read_mudata,
                           write_cohort)
from cgjax.data.split import (Scalers, apply_scalers, fit_scalers, invert_scalers, split_cohort,
                              split_counts)
