"""The data layer: dataset registry, download/verify/extract, compact caches, subsets, splits and
generated stand-ins. Everything a training or evaluation stage needs is :func:`load_split`."""
from .api import (PARTIAL_ENV, count_problem, declared_partial, default_data_dir, image_counts, info, load_labels,
                  load_split, prepare, read_size, resolve)
from .errors import ChecksumMismatch, DataError
from .registry import DatasetSpec, available_datasets, get_spec
from .split import (LabelledSplit, Split, index_digest, labelled_split, stratified_folds, stratified_subset,
                    train_val_split)
from .synthetic import class_patterns, write_synthetic_cifar100, write_synthetic_tiny_imagenet

__all__ = [
    "ChecksumMismatch", "DataError", "DatasetSpec", "LabelledSplit", "PARTIAL_ENV", "Split",
    "available_datasets", "class_patterns", "count_problem", "declared_partial", "default_data_dir",
    "get_spec", "image_counts", "index_digest", "info", "labelled_split", "load_labels", "load_split",
    "prepare", "read_size", "resolve", "stratified_folds", "stratified_subset", "train_val_split",
    "write_synthetic_cifar100", "write_synthetic_tiny_imagenet",
]
