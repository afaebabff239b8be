"""The data layer: dataset registry, download/verify/extract, compact caches, subsets, splits and
generated stand-ins. Everything a training or evaluation stage needs is :func:`load_split`."""
from .api import default_data_dir, info, load_labels, load_split, prepare, read_size, resolve
from .errors import ChecksumMismatch, DataError
from .registry import DatasetSpec, available_datasets, get_spec
from .split import (LabelledSplit, Split, index_digest, labelled_split, stratified_folds, stratified_subset,
                    train_val_split)
from .synthetic import class_patterns, write_synthetic_cifar100, write_synthetic_tiny_imagenet

__all__ = [
    "ChecksumMismatch", "DataError", "DatasetSpec", "LabelledSplit", "Split", "available_datasets",
    "class_patterns", "default_data_dir", "get_spec", "index_digest", "info", "labelled_split",
    "load_labels", "load_split", "prepare", "read_size", "resolve", "stratified_folds", "stratified_subset",
    "train_val_split",
    "write_synthetic_cifar100", "write_synthetic_tiny_imagenet",
]
