"""Trains LightGBM and scikit-learn on the same synthetic split predict-buy trains on,
with the same cleaning and comparable settings, and prints one JSON line per peer.

Bench-only: the peers live in bench/.venv and are never dependencies of predict-buy.
"""
import json
import sys
import time

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

CATEGORICAL = {"Gender": None, "PastAccident": "Unknown"}


def money(s):
    return pd.to_numeric(s.astype(str).str.replace(r"[£,\s]", "", regex=True), errors="coerce")


def clean(df, fitted=None):
    """The default config's cleaning (crates/model/src/default-config.yml)."""
    df = df.copy()
    df["AnnualPremium"] = money(df["AnnualPremium"])
    if fitted is None:
        fitted = {
            "Age": df["Age"].median(),
            "RegionID": df["RegionID"].mode()[0],
            "Gender": df["Gender"].mode()[0],
            "Premium": df["AnnualPremium"].median(),
        }
        q1, q3 = df["AnnualPremium"].quantile([0.25, 0.75])
        fitted["bounds"] = (q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1))
        lo, hi = fitted["bounds"]
        df = df[(df["AnnualPremium"] >= lo) & (df["AnnualPremium"] <= hi)]
    out = pd.DataFrame(
        {
            "Age": df["Age"].fillna(fitted["Age"]),
            "HasDrivingLicense": df["HasDrivingLicense"].fillna(1),
            "RegionID": df["RegionID"].fillna(fitted["RegionID"]),
            "Switch": df["Switch"].fillna(-1),
            "AnnualPremium": df["AnnualPremium"].fillna(fitted["Premium"]),
        }
    )
    gender = df["Gender"].fillna(fitted["Gender"])
    accident = df["PastAccident"].fillna("Unknown")
    for v in ["Female", "Male"]:
        out[f"Gender={v}"] = (gender == v).astype(float)
    for v in ["No", "Unknown", "Yes"]:
        out[f"PastAccident={v}"] = (accident == v).astype(float)
    return out.to_numpy(dtype=np.float32), df["Result"].to_numpy(), fitted


def main(data_dir, peers, trees, depth):
    train = pd.read_csv(f"{data_dir}/train.csv")
    test = pd.read_csv(f"{data_dir}/test.csv")
    x, y, fitted = clean(train)
    xt, yt, _ = clean(test, fitted)
    for peer in peers.split(","):
        extra = {}
        t0 = time.perf_counter()
        if peer == "lightgbm":
            import lightgbm as lgb

            params = dict(
                objective="binary", learning_rate=0.1, num_leaves=2**depth, max_depth=depth,
                min_child_samples=20, lambda_l2=1.0, max_bin=255, num_threads=2, verbose=-1,
                seed=42, deterministic=True, force_col_wise=True,
            )
            booster = lgb.train(params, lgb.Dataset(x, y), num_boost_round=trees)
            fit = time.perf_counter() - t0
            p = booster.predict(xt)
            # Batch scoring on one thread, the peer of predict-buy's one-core batch bench.
            big = np.tile(xt, (4, 1))
            times = []
            for _ in range(5):
                t1 = time.perf_counter()
                booster.predict(big, num_threads=1)
                times.append(time.perf_counter() - t1)
            extra = {"predict_rows_per_s_1_thread": len(big) / sorted(times)[2]}
        elif peer == "sklearn-gb":
            from sklearn.ensemble import GradientBoostingClassifier

            m = GradientBoostingClassifier(n_estimators=trees, max_depth=depth, min_samples_leaf=20, random_state=42)
            m.fit(x, y)
            fit = time.perf_counter() - t0
            p = m.predict_proba(xt)[:, 1]
        elif peer == "sklearn-gb-default":
            # scikit-learn's defaults: 100 trees of depth 3, learning rate 0.1, min leaf 1.
            from sklearn.ensemble import GradientBoostingClassifier

            m = GradientBoostingClassifier(random_state=42)
            m.fit(x, y)
            fit = time.perf_counter() - t0
            p = m.predict_proba(xt)[:, 1]
        elif peer == "sklearn-rf":
            from sklearn.ensemble import RandomForestClassifier

            m = RandomForestClassifier(n_estimators=trees, max_depth=depth, min_samples_leaf=20, n_jobs=-1, random_state=42)
            m.fit(x, y)
            fit = time.perf_counter() - t0
            p = m.predict_proba(xt)[:, 1]
        elif peer == "sklearn-rf-default":
            # scikit-learn's defaults (100 full-depth trees, sqrt features, bootstrap) on both cores.
            from sklearn.ensemble import RandomForestClassifier

            m = RandomForestClassifier(n_jobs=-1, random_state=42)
            m.fit(x, y)
            fit = time.perf_counter() - t0
            p = m.predict_proba(xt)[:, 1]
        else:
            raise SystemExit(f"unknown peer {peer}")
        print(json.dumps({"peer": peer, "fit_seconds": fit, "roc_auc": roc_auc_score(yt, p), "train_rows": len(y), **extra}))
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
