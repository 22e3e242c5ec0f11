"""Splits a classifier cannot learn from, or be judged on, said out loud before training.

A short date range (20 days of 1h bars) can leave the validation split with one class: early
stopping then watches the loss on a single class, the validation accuracy is that class's share,
and nothing else warns. A class that never occurs in the training split is one the network can
never learn. Both are warnings (errors under ``--strict``), naming the split, its class counts
and the fix, so the reader of the log knows why the published numbers mean little.
"""

from __future__ import annotations

from collections.abc import Mapping

FIX = ("train on a longer date range (training_data.start_date/end_date, or the job's "
       "start/end) so that every split holds every class")


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items())


def split_class_problems(labels: Mapping[str, Mapping[str, int]]) -> list[str]:
    """One message per problem in ``labels`` (split -> class name -> rows): a split holding a
    single class, and each class missing from the train split. Empty when all is well."""
    problems = []
    for split, counts in labels.items():
        present = [name for name, count in counts.items() if count > 0]
        if len(present) == 1 and len(counts) > 1:
            problems.append(f"the {split} split has a single class, {present[0]} "
                            f"({_counts(counts)}): its accuracy and loss say nothing about "
                            f"the other classes; {FIX}")
    train = labels.get("train") or {}
    missing = [name for name, count in train.items() if count == 0]
    if missing and len(missing) < len(train) - 1:  # a single-class train split is said above
        problems.append(f"class {', '.join(missing)} is missing from the train split "
                        f"({_counts(train)}): the model cannot learn "
                        f"{'it' if len(missing) == 1 else 'them'}; {FIX}")
    return problems
