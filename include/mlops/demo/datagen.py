"""Synthetic telco-style churn batches for the demo, tests and benchmarks.

Generative model (documented so that tests and drift checks can rely on it):

* Customers get a stable id ``C<seed:04d>-<row:07d>``; batches with different seeds never collide.
* ``contract_type`` ~ {month-to-month 55 %, one-year 25 %, two-year 20 %}; tenure (months) is
  gamma-distributed and longer on longer contracts; ``monthly_charges`` depends on the internet
  service and the number of services; ``total_charges`` ~ tenure x monthly charge with noise.
* The churn log-odds are a linear function of documented drivers plus logistic noise::

      z = -1.2 + 1.3*[month-to-month] - 0.9*[two-year] - 0.035*tenure + 0.018*(monthly_charges-65)
          + 0.35*support_calls_90d + 0.30*late_payments_12m - 0.45*(satisfaction_score-3)
          + 0.5*[fiber] + 0.4*[electronic check] + 0.3*[senior] - 0.01*days_since_last_upgrade/30

  and ``churned = 1`` with probability ``sigmoid(z)``. About 25-30 % of customers churn.

``drift`` (0 = none, 1 = strong) shifts, by a controlled amount: ``monthly_charges`` (+15 x drift),
``support_calls_90d`` (Poisson rate x (1 + drift)), ``data_usage_gb`` (x (1 + 0.5 x drift)) and the
contract mix (month-to-month share + 20 points x drift). The churn function itself is unchanged, so a
model retrained on drifted data can recover.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

DRIFTED_FEATURES = ("monthly_charges", "support_calls_90d", "data_usage_gb", "contract_type")
GENERATORS = ("churn", "breast_cancer")


def generate_churn(rows: int, seed: int = 0, drift: float = 0.0) -> pd.DataFrame:
    """Return ``rows`` customers drawn from the documented generative model."""
    # Long by design: the documented generative model written out variable by variable; it reads as the spec.
    import numpy as np
    import pandas as pd

    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if not 0.0 <= drift <= 5.0:
        raise ValueError(f"drift must be between 0 and 5, got {drift}")
    rng = np.random.default_rng(seed)
    n = rows

    mtm_share = min(0.55 + 0.20 * drift, 0.95)
    rest = 1.0 - mtm_share
    contract = rng.choice(
        ["month-to-month", "one-year", "two-year"], size=n, p=[mtm_share, rest * 25 / 45, rest * 20 / 45]
    )
    is_mtm = contract == "month-to-month"
    is_two = contract == "two-year"
    tenure_scale = np.where(is_mtm, 9.0, np.where(is_two, 22.0, 15.0))
    tenure = np.clip(np.round(rng.gamma(2.0, tenure_scale)), 0, 72).astype(int)

    internet = rng.choice(["fiber", "dsl", "none"], size=n, p=[0.45, 0.38, 0.17])
    num_services = np.clip(rng.poisson(np.where(internet == "none", 1.2, 3.0)), 1, 8)
    base = np.where(internet == "fiber", 70.0, np.where(internet == "dsl", 50.0, 22.0))
    monthly = np.round(base + 4.5 * num_services + rng.normal(0, 6, n) + 15.0 * drift, 2)
    monthly = np.clip(monthly, 15.0, 200.0)
    total = np.round(np.maximum(monthly * tenure * rng.normal(1.0, 0.05, n), 0.0), 2)

    age = np.clip(np.round(rng.normal(45, 15, n)), 18, 90).astype(int)
    senior = np.where(age >= 65, "yes", "no")
    dependents = rng.poisson(0.8, n)
    support_calls = rng.poisson(1.2 * (1.0 + drift) * np.where(internet == "fiber", 1.3, 1.0))
    payment = rng.choice(
        ["electronic-check", "mailed-check", "bank-transfer", "credit-card"],
        size=n,
        p=[0.34, 0.22, 0.22, 0.22],
    )
    late = rng.poisson(np.where(payment == "electronic-check", 0.9, 0.4))
    usage = np.round(rng.lognormal(np.where(internet == "none", 0.0, 2.8), 0.6, n) * (1.0 + 0.5 * drift), 2)
    minutes = np.round(rng.gamma(3.0, 120.0, n), 1)
    sms = rng.poisson(60, n)
    satisfaction = np.clip(np.round(rng.normal(3.4, 1.0, n) - 0.25 * support_calls / 2), 1, 5).astype(int)
    days_upgrade = rng.integers(0, 1500, n)
    region = rng.choice(["north", "south", "east", "west", "central"], size=n)
    device = rng.choice(["android", "ios", "feature-phone", "other"], size=n, p=[0.5, 0.38, 0.07, 0.05])
    paperless = rng.choice(["yes", "no"], size=n, p=[0.6, 0.4])

    z = (
        -1.2
        + 1.3 * is_mtm
        - 0.9 * is_two
        - 0.035 * tenure
        + 0.018 * (monthly - 65.0)
        + 0.35 * support_calls
        + 0.30 * late
        - 0.45 * (satisfaction - 3)
        + 0.5 * (internet == "fiber")
        + 0.4 * (payment == "electronic-check")
        + 0.3 * (senior == "yes")
        - 0.01 * days_upgrade / 30.0
        + rng.logistic(0.0, 0.6, n)
    )
    churned = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(int)

    return pd.DataFrame(
        {
            "customer_id": [f"C{seed:04d}-{i:07d}" for i in range(n)],
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "age": age,
            "num_dependents": dependents,
            "support_calls_90d": support_calls,
            "late_payments_12m": late,
            "data_usage_gb": usage,
            "call_minutes": minutes,
            "sms_count": sms,
            "num_services": num_services,
            "satisfaction_score": satisfaction,
            "days_since_last_upgrade": days_upgrade,
            "contract_type": contract,
            "payment_method": payment,
            "internet_service": internet,
            "region": region,
            "device_type": device,
            "paperless_billing": paperless,
            "senior_citizen": senior,
            "churned": churned,
        }
    )


def generate_breast_cancer(rows: int, seed: int = 0, drift: float = 0.0) -> pd.DataFrame:
    """Batches of scikit-learn's bundled Wisconsin breast-cancer data (569 real cases), framed as binary.

    Rows are real cases drawn without replacement (so at most 569 per batch); a case keeps its id
    (``P<index>``) in every batch, so the id-hash holdout keeps it on one side of every split. The
    target ``malignant`` is 1 for malignant tumours. ``drift`` scales every ``mean_*`` feature by
    ``1 + 0.2 x drift``. The second model config of the platform runs on it, unchanged code.
    """
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if not 0.0 <= drift <= 5.0:
        raise ValueError(f"drift must be between 0 and 5, got {drift}")
    data = load_breast_cancer(as_frame=True)
    X = data.data.rename(columns=lambda c: c.replace(" ", "_"))
    if rows > len(X):
        raise ValueError(f"breast_cancer has {len(X)} real cases; ask for at most {len(X)} rows")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(X), rows, replace=False)
    out = X.iloc[idx].reset_index(drop=True)
    if drift:
        mean_cols = [c for c in out.columns if c.startswith("mean_")]
        out[mean_cols] = out[mean_cols] * (1.0 + 0.2 * drift)
    out.insert(0, "case_id", [f"P{i:04d}" for i in idx])
    out["malignant"] = (1 - data.target.to_numpy()[idx]).astype(int)
    return out


def generate(model: str, rows: int, seed: int = 0, drift: float = 0.0) -> pd.DataFrame:
    """Generate a batch for a model that has a built-in generator."""
    generators = {"churn": generate_churn, "breast_cancer": generate_breast_cancer}
    if model not in generators:
        raise ValueError(f"no data generator for model {model!r} (available: {', '.join(GENERATORS)})")
    return generators[model](rows, seed=seed, drift=drift)


def write_frame(df: pd.DataFrame, out: str | Path) -> Path:
    """Write ``df`` as CSV or Parquet, chosen by the file extension. Never overwrites a file."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in {".csv", ".parquet"}:
        raise ValueError(f"output must end in .csv or .parquet, got {out.name!r}")
    if out.exists():
        raise FileExistsError(f"{out} exists already; batches are never overwritten")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if suffix == ".csv":
        df.to_csv(tmp, index=False)
    else:
        df.to_parquet(tmp, index=False)
    tmp.rename(out)  # atomic on one filesystem: a watcher never sees half a batch
    return out
