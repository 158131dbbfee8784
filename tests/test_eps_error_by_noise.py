"""The exact posterior eps of experiments/eps_error_by_noise.py: -s times the gradient of the
diffused mixture's log density, checked by central finite differences of that density in float64."""

import numpy as np
from scipy.stats import multivariate_normal

from experiment_scripts import load


def test_exact_eps_is_minus_s_times_the_score_of_the_diffused_mixture():
    rng = np.random.default_rng(0)
    N, C, D = 4, 2, 3
    weights = rng.dirichlet(np.ones(C), size=N)
    means = rng.normal(size=(N, C, D))
    covs = np.stack([(lambda L: L @ L.T + 0.1 * np.eye(D))(rng.normal(size=(D, D))) for _ in range(C)])
    a = np.sqrt(0.3)
    s = np.sqrt(1 - a * a)
    x = rng.normal(size=(N, D))

    def log_p(n, y):  # the diffused mixture of row n: sum_c w_c N(a m_c, a^2 S_c + s^2 I)
        return np.log(sum(weights[n, c] * multivariate_normal(a * means[n, c], a * a * covs[c] + s * s * np.eye(D)).pdf(y)
                          for c in range(C)))

    h = 1e-5
    fd = np.array([[(log_p(n, x[n] + h * e) - log_p(n, x[n] - h * e)) / (2 * h) for e in np.eye(D)] for n in range(N)])
    got = load("eps_error_by_noise").exact_eps(x, a, s, weights, means, covs)
    np.testing.assert_allclose(got, -s * fd, rtol=1e-5, atol=1e-7)
