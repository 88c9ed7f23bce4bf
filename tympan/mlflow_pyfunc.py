"""The MLflow pyfunc flavor of a tympan bundle, loaded without unpickling anything.

`tympan register` logs a model whose MLmodel names this module as its `loader_module` and the
bundle directory as its `data`, with no pickled model and no code paths. MLflow imports this
module from the installed tympan and calls `_load_pyfunc(data_path)`, which reads the bundle as
data: JSON and safetensors, and only tympan's own classes unless the caller loads with
`mlflow.pyfunc.load_model(uri, model_config={"trust_code": True})`.

`predict` takes a float32 array (batch, time) of raw audio at `params["sample_rate"]` (default:
the bundle's rate); shorter rows are right-padded with NaN, which is trimmed. It returns a table
with a label and one probability column per class. MLflow itself is not imported here.
"""

from __future__ import annotations

import numpy as np

from tympan.bundle import Predictor


class BundleModel:
    """A tympan bundle as an MLflow pyfunc implementation: raw audio rows in, the task's outputs
    in table form out (e.g. `label`, `prob_<class>`), with the bundle's own preprocessing."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    def predict(self, model_input, params: dict | None = None):
        import pandas as pd

        rate = int((params or {}).get("sample_rate", self.predictor.sample_rate))
        rows = np.atleast_2d(np.asarray(model_input, dtype=np.float32))
        clips = [self.predictor.features(row[~np.isnan(row)], rate) for row in rows]
        predictions = self.predictor.predict_features(clips)
        return pd.DataFrame.from_records([self.predictor.as_row(p) for p in predictions])


def _load_pyfunc(data_path: str, model_config: dict | None = None) -> BundleModel:
    """MLflow's entry point for a custom pyfunc flavor: `data_path` is the bundle directory."""
    trust_code = bool((model_config or {}).get("trust_code", False))
    return BundleModel(Predictor(data_path, trust_code=trust_code))
