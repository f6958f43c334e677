"""Getting predictions out of a deploy bundle: the `Predictor` API, and the preprocessing it shares
with training."""

from project.inference.predictor import Prediction, Predictor
from project.inference.preprocess import DEFAULT_MAX_PIXELS, InvalidInput, Preprocessor

__all__ = ["DEFAULT_MAX_PIXELS", "InvalidInput", "Prediction", "Predictor", "Preprocessor"]
