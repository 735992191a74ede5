"""An original-scripts config.ini mapped onto today's sections and keys.

Old files have sections [training_defaults], [feature_extraction], [sampling], [preprocessing] and
[augmentation], and write strings bare (`optimizer = adam`, which config.parse_value already reads
as a string). Each old key goes to its counterpart; a key without one gives a one-line note and is
ignored, so an old config.ini is read as it is.
"""

from __future__ import annotations

from typing import Any

OLD_SECTIONS = {"training_defaults": "training", "feature_extraction": "features", "sampling": "features",
                "preprocessing": "features"}
# (old section, old key) -> today's key in the section OLD_SECTIONS names, where the name changed
RENAMED = {
    ("training_defaults", "save_model_metric"): "save_best_model_metric",
    ("feature_extraction", "stft_window_size"): "window_size",
    ("feature_extraction", "stft_fft_size"): "fft_size",
    ("feature_extraction", "stft_hop_size"): "hop_size",
    ("sampling", "sr"): "sr_target",
    ("sampling", "sample_rate"): "sr_target",
}
# Old keys that have no counterpart, and why.
WHY_IGNORED = {
    "train_split": "the training fraction is what validation_split and test_split leave",
    "gpu_ID": "set gpu_ID in the experiment file, or use --gpu",
}
# Training switches accepted although the packaged [training] does not list them (params.OPTIONAL_TRAINING).
EXTRA_TRAINING_KEYS = ("early_stopping", "shuffle_training_data")


def is_old(sections: dict[str, dict[str, Any]]) -> bool:
    return any(name in OLD_SECTIONS for name in sections)


def map_old(sections: dict[str, dict[str, Any]], known: dict[str, set[str]], path) -> tuple[dict, list[str]]:
    """(today's sections, notes) for an old config file's `sections`; `known` lists today's keys."""
    out: dict[str, dict[str, Any]] = {}
    notes: list[str] = []

    def ignore(section: str, key: str, why: str) -> None:
        notes.append(f"{path}: [{section}] {key} has no counterpart in xvalkit and is ignored ({why})")

    for section, values in sections.items():
        target = OLD_SECTIONS.get(section, section)
        if target not in known:
            for key in values:
                ignore(section, key, f"section [{section}] is not used any more")
            continue
        allowed = known[target] | (set(EXTRA_TRAINING_KEYS) if target == "training" else set())
        segmentation = values.get("segmentation")
        for key, value in values.items():
            new_key = RENAMED.get((section, key), key)
            if key == "segmentation" and target == "features":
                if segmentation is False:  # one datapoint per file, padded or cropped to fix_length
                    out.setdefault(target, {})["sequence_length"] = 0
                    notes.append(f"{path}: [{section}] segmentation = False is sequence_length = 0 in [features]")
                continue
            if key == "sequence_length" and segmentation is False:
                continue
            if key in WHY_IGNORED:
                ignore(section, key, WHY_IGNORED[key])
            elif new_key not in allowed:
                ignore(section, key, f"[{target}] has no key {new_key}")
            else:
                out.setdefault(target, {})[new_key] = value
    return out, notes
