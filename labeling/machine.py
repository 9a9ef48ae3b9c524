"""Machine labels as the app's pre-selected suggestions: read from the store, computed (and stored) when missing.

The app shows the same labels ``autolabel`` writes: for a face without them it runs ``predict_image`` once and
stores the answers under the model's own annotator name, so a later ``autolabel`` or export sees exactly what
people were shown.
"""

from __future__ import annotations

import sys
from pathlib import Path

from labeling.attributes import CANT_TELL
from labeling.autolabel import predict_image, source_names
from labeling.errors import LabelingError
from labeling.provenance import is_model
from labeling.sources.modelfiles import check_model_files
from labeling.store import LabelStore
from labeling.suggest import Suggestion

__all__ = ["MachineSuggestions"]


class MachineSuggestions:
    """Per-item machine suggestions for the attributes of ``store`` that have a source."""

    def __init__(self, store: LabelStore, notices: list[str]) -> None:
        self.store = store
        self.sources = {a: s for a, s in source_names().items() if a in store.attributes.names}
        self.attributes = tuple(self.sources)
        self.failures = 0
        try:  # fail early, with the one-line reason, rather than on the first face
            check_model_files()
        except LabelingError as exc:
            notices.append(f"machine suggestions off: {exc}")
            self.sources, self.attributes = {}, ()

    def for_item(self, item_id: str, path: str | Path) -> dict[str, Suggestion]:
        """``{attribute: Suggestion}``: the most confident model answer per attribute (unsure answers left out)."""
        labels = [lab for lab in self.store.item_labels(item_id) if is_model(lab.annotator)]
        have = {(lab.annotator, lab.attribute) for lab in labels}
        missing = tuple(a for a, s in self.sources.items() if (s, a) not in have)
        if missing:
            try:
                fresh = predict_image(path, missing)  # the request and prefetch threads at once: the models guard
            except Exception as exc:  # a face the models cannot handle just gets no suggestion
                if not self.failures:
                    print(f"machine suggestions failed on {item_id} ({type(exc).__name__}: {exc}); such faces get "
                          "none", file=sys.stderr)
                self.failures += 1
                fresh = {}
            by_source: dict[str, list] = {}
            for name, m in fresh.items():
                by_source.setdefault(m.source, []).append((item_id, name, m.value, m.confidence, m.sure))
            for source, rows in by_source.items():
                self.store.save_machine(source, rows)
            labels = [lab for lab in self.store.item_labels(item_id) if is_model(lab.annotator)]
        best: dict[str, Suggestion] = {}
        for lab in labels:
            if lab.value == CANT_TELL or lab.attribute not in self.store.attributes.names:
                continue
            confidence = float(lab.confidence or 0.0)
            sure = bool(lab.sure)
            if lab.attribute not in best or confidence > best[lab.attribute].confidence:
                best[lab.attribute] = Suggestion(lab.value, confidence, lab.annotator, sure)
        return best
