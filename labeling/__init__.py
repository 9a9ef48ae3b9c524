"""Labelling faces in a browser: durable multi-annotator storage, suggestions, agreement, HF dataset export."""

from labeling.accuracy import AccuracyReport, accuracy_report, format_accuracy
from labeling.agreement import cohen_kappa, fleiss_kappa, krippendorff_alpha, majority, resolve
from labeling.attributes import CANT_TELL, DEFAULT_ATTRIBUTES, Attribute, AttributeSet, load_attributes
from labeling.autolabel import autolabel, predict_image
from labeling.client import LabelingClient, api_session
from labeling.errors import LabelingError
from labeling.export import ExportResult, export_dataset, publish, split_items
from labeling.images import Catalog, Item, load_catalog
from labeling.provenance import Resolved, is_model, resolve_labels
from labeling.sources.base import MachineLabel
from labeling.stats import Stats, compute_stats, format_stats
from labeling.store import Label, LabelStore, Progress
from labeling.users import Users, load_users

__all__ = [
    "AccuracyReport", "Attribute", "AttributeSet", "CANT_TELL", "Catalog", "DEFAULT_ATTRIBUTES", "ExportResult",
    "Item", "Label", "LabelStore", "LabelingClient", "LabelingError", "MachineLabel", "Progress", "Resolved",
    "Stats", "Users", "accuracy_report", "api_session", "autolabel", "cohen_kappa", "compute_stats",
    "export_dataset", "fleiss_kappa", "format_accuracy", "format_stats", "is_model", "krippendorff_alpha",
    "load_attributes", "load_catalog", "load_users", "majority", "predict_image", "publish", "resolve",
    "resolve_labels", "split_items",
]
