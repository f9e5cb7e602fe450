"""Datasets: verified MNIST / Fashion-MNIST arrays, the validation split, the batch loader."""

from deepconvnet.data.mnist import (
    DATASETS,
    Dataset,
    dataset_report,
    load_dataset,
    to_float,
    train_val_split,
)

__all__ = [
    "DATASETS",
    "Dataset",
    "dataset_report",
    "load_dataset",
    "to_float",
    "train_val_split",
]
