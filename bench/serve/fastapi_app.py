"""A faithful stand-in for the original FastAPI + scikit-learn service, for the
benchmark only: the same request fields and answer shape, a pydantic request model, a
pandas DataFrame per request and a fitted scikit-learn Pipeline (currency parsing,
imputation, scaling, one-hot encoding and a 100-tree depth-6 GradientBoostingClassifier
on the columns the original kept).

    python fastapi_app.py TRAIN_CSV PORT
"""

import sys
from typing import Optional, Union

import numpy as np
import pandas as pd
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, OneHotEncoder

NUMERIC = ["AnnualPremium", "Age", "RegionID"]
CATEGORICAL = ["Gender", "PastAccident"]


def parse_currency(frame):
    def one(v):
        if isinstance(v, str):
            v = v.replace("£", "").replace(",", "").strip()
            return float(v) if v else np.nan
        return v

    return frame.apply(lambda col: col.map(one)).astype(float)


def build_pipeline():
    numeric = Pipeline(
        [
            ("parse", FunctionTransformer(parse_currency)),
            ("impute", SimpleImputer(strategy="median")),
            ("scale", MinMaxScaler()),
        ]
    )
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="most_frequent")),
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ]
    )
    pre = ColumnTransformer([("num", numeric, NUMERIC), ("cat", categorical, CATEGORICAL)])
    model = GradientBoostingClassifier(n_estimators=100, max_depth=6, random_state=42)
    return Pipeline([("pre", pre), ("model", model)])


class Request(BaseModel):
    Gender: Optional[str] = None
    Age: Optional[float] = None
    HasDrivingLicense: Optional[int] = None
    RegionID: Optional[float] = None
    Switch: Optional[int] = None
    PastAccident: Optional[str] = None
    AnnualPremium: Optional[Union[float, str]] = None


def make_app(pipeline):
    app = FastAPI()

    @app.get("/")
    def root():
        return {"health_check": "OK", "model_version": "sklearn"}

    @app.post("/predict")
    def predict(req: Request):
        frame = pd.DataFrame([req.model_dump()])
        proba = pipeline.predict_proba(frame)[0, 1]
        return {
            "predicted_class": int(proba >= 0.5),
            "probability": float(proba),
            "model_version": "sklearn",
        }

    return app


def main():
    train_csv, port = sys.argv[1], int(sys.argv[2])
    # Serving cost does not depend on the training size; 20k rows keep the fit short.
    data = pd.read_csv(train_csv, nrows=20_000)
    data = data.replace({"": np.nan})
    y = data["Result"].astype(int)
    x = data[NUMERIC + CATEGORICAL].copy()
    x[CATEGORICAL] = x[CATEGORICAL].astype(object).where(x[CATEGORICAL].notna(), np.nan)
    pipeline = build_pipeline().fit(x, y)
    print(f"fastapi stand-in: trained on {len(x)} rows", file=sys.stderr, flush=True)
    uvicorn.run(make_app(pipeline), host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
