"""experiments/estimation_floor.py: its conditioning against the zoo's exact oracle, and its per-type
fit against the law it is fitted on (consistency on a large cohort)."""

import numpy as np
import pytest

from cgjax.datasets import zoo
from experiment_scripts import load

floor = load("estimation_floor")


@pytest.mark.parametrize("name", ["issue11", "noisy_small"])  # type-specific loadings, and shared ones
def test_mixture_conditional_with_the_laws_own_moments_is_the_oracle(name):
    """Given the law's exact per-type joint moments, mixture_conditional is the exact posterior. The
    oracle of noisy_small conditions in the latent space (another derivation); issue11's densely."""
    member = zoo.law(name)
    law = member.oracle
    target, given = member.modalities[0], list(member.modalities[1:])
    cohort = member.cohort(seed=3)
    rows = np.all([cohort.masks[m] for m in member.modalities], axis=0)
    x = {m: np.asarray(cohort.data[m][rows][:40], np.float64) for m in given}
    exact = member.conditional(target, x)
    mean, cov, _ = law._joint
    index = law._index([target] + given)
    prior = member.type_prior(np.ones((1, len(member.modalities)), bool))[0]
    ours = floor.mixture_conditional(np.log(prior), mean[:, index], cov[:, index][:, :, index],
                                     np.concatenate([x[m] for m in given], axis=1), member.dims[target])
    np.testing.assert_allclose(ours.weights, exact.weights, atol=1e-8)
    np.testing.assert_allclose(ours.mean(), exact.mean(), rtol=1e-5, atol=1e-5)  # joint.conditional adds a 1e-6-relative jitter
    np.testing.assert_allclose(ours.variance(), exact.variance(), rtol=1e-5, atol=1e-5)  # joint.conditional adds a 1e-6-relative jitter


def test_told_types_fit_is_consistent():
    """On a large cohort of a small law with type-specific loadings and missing modalities, the
    per-type fit's posterior means and variances approach the exact ones."""
    spec = zoo.LawSpec(name="tiny_types", dims=(5, 4, 3), signal=(0.7, 0.7, 0.7), missing=(0.2, 0.2, 0.2),
                       n_latent=3, n_types=3, type_loading_share=0.6, n_samples=12000, law_seed=5)
    member = zoo.ZooLaw(spec.name, zoo.build_law(spec), spec.n_samples, spec)
    cohort = member.cohort(seed=0)
    target, given = member.modalities[0], list(member.modalities[1:])
    data = {m: np.where(cohort.masks[m][:, None], cohort.data[m], np.nan).astype(np.float64)
            for m in member.modalities}
    log_prior, means, covs, regressions = floor.told_types_fit(
        data[target], np.concatenate([data[m] for m in given], axis=1), np.asarray(cohort.clinical["cancer_type"]))
    assert len(log_prior) == 3 and all(r is not None for r in regressions)
    test = member.cohort(seed=1)
    rows = np.all([test.masks[m] for m in member.modalities], axis=0)
    x = {m: np.asarray(test.data[m][rows][:300], np.float64) for m in given}
    exact = member.conditional(target, x)
    fitted = floor.mixture_conditional(log_prior, means, covs, np.concatenate([x[m] for m in given], axis=1),
                                       member.dims[target], regressions)
    err = fitted.mean() - exact.mean()
    assert (err ** 2).mean() < 0.02 * exact.variance().mean()
    assert 0.9 < fitted.variance().mean() / exact.variance().mean() < 1.1
    # an independent witness that the check can fail: ignoring the types (one Gaussian) is far off
    one = floor.mixture_conditional(np.zeros(1), means[:1], covs[:1], np.concatenate([x[m] for m in given], axis=1),
                                    member.dims[target], regressions[:1])
    assert ((one.mean() - exact.mean()) ** 2).mean() > 0.02 * exact.variance().mean()
