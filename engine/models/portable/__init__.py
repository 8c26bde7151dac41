"""Fitted models as plain predictors for Numerai's model-upload runtime.

``eraflow export`` pickles this package by value (cloudpickle), so its modules import only NumPy
at the top and a model library (lightgbm, xgboost) inside the class that needs it: the runtime
has those, never eraflow. Every predictor has ``predict(x, eras)``: ``x`` float64 feature codes
0..4 (rows × the model's features, NaN missing), ``eras`` an integer era label per row (for
predictors that work per era); it returns float64 predictions, one per row.
"""
