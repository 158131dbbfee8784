"""Run every scikit-learn estimator check on ``cgjax.Imputer`` (tiny models) and print the outcome.

    python experiments/sklearn_checks.py

Each check fits the estimator (a few seconds of compilation each on a CPU), so the full set takes
too long for the test suite; tests/test_imputer.py runs the checks that do not train and asserts
the list of checks expected to fail (:data:`cgjax.imputer.SKLEARN_EXPECTED_FAILURES`).
"""

import warnings

from sklearn.utils.estimator_checks import check_estimator

from cgjax.imputer import SKLEARN_EXPECTED_FAILURES, Imputer

if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    est = Imputer(preset="tiny", epochs=2)
    results = check_estimator(est, on_fail=None, expected_failed_checks=SKLEARN_EXPECTED_FAILURES)
    for r in results:
        line = f"{r['status']:>8}  {r['check_name']}"
        if r["status"] == "failed":
            line += f"  ({type(r['exception']).__name__}: {str(r['exception']).splitlines()[0][:150]})"
        print(line, flush=True)
