"""The data card of a prepared set: what is in it, what was left out and why, and what it looks like.

data_card.json / data_card.md: images per class and split, the split rule and the small classes that took
its minimum rule, imbalance ratio, size/mode/format
histograms, skipped files with reasons, duplicates, the train split's per-channel mean/std.
samples.png: a few images per class with their labels; class_counts.png: images per class and split.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from project.data.scan import SPLITS, Scan

CARD_FILES = ("data_card.md", "data_card.json", "samples.png", "class_counts.png")
MAX_EXAMPLES = 5


def select_kept(scan: Scan, records: list[dict[str, Any]]) -> tuple[list[int], dict[str, Any]]:
    """Which candidates go into the prepared set, and the skipped files and duplicates found on the way."""
    entries = scan.entries
    skipped = [{"path": e.relpath, "reason": r["reason"]} for e, r in zip(entries, records, strict=True) if r["reason"]]
    skipped += [{"path": path, "reason": reason} for path, reason in scan.ignored]
    skipped += [{"path": f"{name}/", "reason": "class folder holds no image file"} for name in scan.empty_classes]
    valid = [i for i, r in enumerate(records) if not r["reason"]]
    valid_labels = {entries[i].label for i in valid}
    for label in sorted({e.label for e in entries} - valid_labels):
        skipped.append({"path": f"{label}/", "reason": "class has no valid image (left out of the classes)"})

    groups: dict[str, list[int]] = defaultdict(list)
    for i in valid:
        groups[records[i]["sha256"]].append(i)
    rank = {split: n for n, split in enumerate(SPLITS)}
    removed: set[int] = set()
    within = cross = 0
    examples: list[dict[str, str]] = []
    conflicts: list[list[str]] = []
    for members in groups.values():
        if len(members) < 2:
            continue
        by_split = Counter(entries[i].split for i in members)
        within += sum(n - 1 for n in by_split.values())
        if len({entries[i].label for i in members}) > 1:
            conflicts.append([f"{entries[i].relpath} ({entries[i].label})" for i in members])
        first = min(by_split, key=lambda s: rank[s])  # train wins over val, val over test
        keep = next(i for i in members if entries[i].split == first)
        for i in members:
            if entries[i].split != first:  # the same picture in a later split: leakage
                removed.add(i)
                cross += 1
                if len(examples) < MAX_EXAMPLES:
                    examples.append({"kept": entries[keep].relpath, "removed": entries[i].relpath})
    summary = {
        "skipped": skipped,
        "duplicates": {
            "groups": sum(len(m) > 1 for m in groups.values()),
            "within_split_copies": within,
            "cross_split_removed": cross,
            "cross_split_examples": examples,
            "conflicting_labels": conflicts[:MAX_EXAMPLES],
            "conflicting_label_groups": len(conflicts),
        },
    }
    return [i for i in valid if i not in removed], summary


def _size_bucket(width: int, height: int) -> str:
    side = max(width, height)
    for limit in (64, 256, 512, 1024, 2048, 4096):
        if side <= limit:
            return f"≤{limit} px"
    return ">4096 px"


def build_card(meta: dict[str, Any], summary: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    decoded = [r for r in records if r.get("width")]
    train = meta["counts"]["train"]
    nonzero = [n for n in train.values() if n]
    return {
        "source": meta["source"],
        "layout": meta["layout"],
        "classes": meta["class_names"],
        "images": {split: sum(meta["counts"][split].values()) for split in SPLITS},
        "images_per_class": meta["counts"],
        "split_rule": meta["split_rule"],
        "imbalance_ratio": round(max(nonzero) / min(nonzero), 3) if nonzero else None,
        "mean": meta["mean"],
        "std": meta["std"],
        "settings": meta["settings"],
        "original_sizes": dict(Counter(_size_bucket(r["width"], r["height"]) for r in decoded).most_common()),
        "common_sizes": {
            f"{w}×{h}": n for (w, h), n in Counter((r["width"], r["height"]) for r in decoded).most_common(5)
        },
        "modes": dict(Counter(r["mode"] for r in decoded).most_common()),
        "formats": dict(Counter(r["format"] for r in decoded).most_common()),
        **summary,
    }


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def card_markdown(card: dict[str, Any]) -> str:
    per_class = card["images_per_class"]
    lines = [f"# Data card: {card['source']}", ""]
    lines += [
        f"Layout `{card['layout']}`, {len(card['classes'])} classes, images: "
        + ", ".join(f"{s} {n}" for s, n in card["images"].items())
        + f". Imbalance ratio (largest/smallest train class): {card['imbalance_ratio']}.",
        "",
    ]
    lines += [f"Train mean {card['mean']}, std {card['std']} (per channel, [0, 1] scale).", ""]
    lines += [*_table(["class", *SPLITS], [[c, *(per_class[s][c] for s in SPLITS)] for c in card["classes"]]), ""]
    lines += [_split_rule_line(card["split_rule"], card["settings"]), ""]
    for title, key in (("Original sizes (longer side)", "original_sizes"), ("Modes", "modes"), ("Formats", "formats")):
        lines += [f"**{title}:** " + ", ".join(f"{k} {v}" for k, v in card[key].items()), ""]
    lines += [f"## Skipped files ({len(card['skipped'])})", ""]
    lines += (
        _table(["file", "reason"], [[s["path"], s["reason"]] for s in card["skipped"]]) if card["skipped"] else ["none"]
    )
    dup = card["duplicates"]
    lines += [
        "",
        "## Duplicates",
        "",
        f"{dup['groups']} groups of byte-identical files; {dup['within_split_copies']} extra "
        f"copies within a split; {dup['cross_split_removed']} cross-split copies removed from val/test "
        f"(leakage); {dup['conflicting_label_groups']} groups with conflicting labels.",
    ]
    for example in dup["cross_split_examples"]:
        lines.append(f"- kept `{example['kept']}`, removed `{example['removed']}`")
    return "\n".join(lines) + "\n"


def _split_rule_line(rule: dict[str, Any], settings: dict[str, Any]) -> str:
    small = ", ".join(f"`{name}`" for name in rule["small_classes"]) or "none"
    return (
        f"**Splits** (rule {rule['version']}): where no split folder or column says otherwise, each file goes by a "
        f"hash of `split_seed` ({settings['split_seed']}) and its relative path, so adding, removing or renaming "
        "other files never moves it. Classes the hash left without a test, val or train image, where the minimum "
        f"rule moved one or two files (a test and a val image where the class can spare them): {small}."
    )


def _samples_png(path: Path, directory: Path, class_names: list[str], per_class: int = 6) -> None:
    from matplotlib.figure import Figure

    rows = [[] for _ in class_names]
    for split in SPLITS:
        labels = np.load(directory / f"labels_{split}.npy")
        if not len(labels):
            continue
        images = np.load(directory / f"images_{split}.npy", mmap_mode="r")
        for index, label in enumerate(labels):
            if len(rows[label]) < per_class:
                rows[label].append(np.asarray(images[index]))
    shown = list(range(min(len(class_names), 20)))
    fig = Figure(figsize=(per_class * 1.2 + 1.5, len(shown) * 1.2 + 0.3))
    axes = fig.subplots(len(shown), per_class, squeeze=False)
    for r, c in enumerate(shown):
        for k in range(per_class):
            ax = axes[r][k]
            ax.axis("off")
            if k < len(rows[c]):
                image = rows[c][k].transpose(1, 2, 0)
                ax.imshow(image[:, :, 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=255)
        axes[r][0].set_title(class_names[c], loc="left", fontsize=9)
    fig.savefig(path, dpi=72)


def _counts_png(path: Path, card: dict[str, Any]) -> None:
    from matplotlib.figure import Figure

    classes = card["classes"]
    fig = Figure(figsize=(7, 0.3 * len(classes) + 1.2))
    ax = fig.subplots()
    left = np.zeros(len(classes))
    for split in SPLITS:
        values = np.array([card["images_per_class"][split][c] for c in classes])
        ax.barh(classes, values, left=left, label=split)
        left += values
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=72)


def write_card(
    directory: Path, meta: dict[str, Any], summary: dict[str, Any], records: list[dict[str, Any]], scan: Scan
) -> dict[str, Any]:
    card = build_card(meta, summary, records)
    (directory / "data_card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    (directory / "data_card.md").write_text(card_markdown(card))
    _samples_png(directory / "samples.png", directory, meta["class_names"])
    _counts_png(directory / "class_counts.png", card)
    return card
