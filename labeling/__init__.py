"""Labelling faces in a browser: durable multi-annotator storage, suggestions, agreement, HF dataset export."""

from labeling.agreement import cohen_kappa, fleiss_kappa, krippendorff_alpha, majority, resolve
from labeling.attributes import DEFAULT_ATTRIBUTES, Attribute, AttributeSet, load_attributes
from labeling.client import LabelingClient, api_session
from labeling.errors import LabelingError
from labeling.export import ExportResult, export_dataset, publish, split_items
from labeling.images import Catalog, Item, load_catalog
from labeling.stats import Stats, compute_stats, format_stats
from labeling.store import Label, LabelStore, Progress
from labeling.users import Users, load_users

__all__ = [
    "Attribute", "AttributeSet", "Catalog", "DEFAULT_ATTRIBUTES", "ExportResult", "Item", "Label", "LabelStore",
    "LabelingClient", "LabelingError", "Progress", "Stats", "Users", "api_session", "cohen_kappa", "compute_stats",
    "export_dataset", "fleiss_kappa", "format_stats", "krippendorff_alpha", "load_attributes", "load_catalog",
    "load_users", "majority", "publish", "resolve", "split_items",
]
