"""The original pipeline on the seed's config, end to end, for bench/train/seed.sh:
read train.csv and test.csv, clean as its clean.py did (and as predict-buy's
`insurance` preset does), scale and one-hot encode the five columns its
ColumnTransformer kept, SMOTE (imbalanced-learn, k 5, ratio 1.0), then
GradientBoostingClassifier(max_depth=None, n_estimators=10); score the test rows.
Prints one JSON line: wall seconds from start to the scored test set, and its ROC AUC.

Bench-only: the peers live in bench/.venv and are never dependencies of predict-buy.
"""
import json
import sys
import time

t0 = time.perf_counter()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from imblearn.over_sampling import SMOTE  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.ensemble import GradientBoostingClassifier  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402

NUMERIC = ["Age", "RegionID", "AnnualPremium"]
CATEGORICAL = ["Gender", "PastAccident"]


def money(s):
    return pd.to_numeric(s.astype(str).str.replace(r"[£,\s]", "", regex=True), errors="coerce")


def clean(df, fitted=None):
    df = df.drop(columns=["id", "SalesChannelID", "VehicleAge", "DaysSinceCreated"]).copy()
    df["AnnualPremium"] = money(df["AnnualPremium"])
    if fitted is None:
        fitted = {
            "Age": df["Age"].median(),
            "RegionID": df["RegionID"].mode()[0],
            "Gender": df["Gender"].mode()[0],
            "AnnualPremium": df["AnnualPremium"].median(),
        }
        q1, q3 = df["AnnualPremium"].quantile([0.25, 0.75])
        lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
        df = df[df["AnnualPremium"].isna() | df["AnnualPremium"].between(lo, hi)]
    df = df.fillna(
        {
            "Age": fitted["Age"],
            "RegionID": fitted["RegionID"],
            "Gender": fitted["Gender"],
            "AnnualPremium": fitted["AnnualPremium"],
            "PastAccident": "Unknown",
            "HasDrivingLicense": 1,
            "Switch": -1,
        }
    )
    return df, fitted


def main(data_dir):
    train, fitted = clean(pd.read_csv(f"{data_dir}/train.csv"))
    test, _ = clean(pd.read_csv(f"{data_dir}/test.csv"), fitted)
    ct = ColumnTransformer(
        [
            ("num", StandardScaler(), NUMERIC),
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), CATEGORICAL),
        ]
    )
    x = ct.fit_transform(train)
    xt = ct.transform(test)
    x, y = SMOTE(random_state=42).fit_resample(x, train["Result"].to_numpy())
    t_fit = time.perf_counter()
    model = GradientBoostingClassifier(max_depth=None, n_estimators=10, random_state=42)
    model.fit(x, y)
    fit = time.perf_counter() - t_fit
    auc = roc_auc_score(test["Result"].to_numpy(), model.predict_proba(xt)[:, 1])
    print(
        json.dumps(
            {
                "peer": "sklearn-seed",
                "wall_seconds": time.perf_counter() - t0,
                "fit_seconds": fit,
                "roc_auc": auc,
                "train_rows": int(len(y)),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
