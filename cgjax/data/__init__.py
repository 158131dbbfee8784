"""Cohorts: the data model, cohort files, the split and scaling."""

from cgjax.data.cohort import (CLINICAL_COLUMNS, DEFAULT_MODALITIES, SPLITS, Cohort, from_arrays,
                               normalise_clinical, validate)
