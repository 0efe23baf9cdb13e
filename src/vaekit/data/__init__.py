"""Datasets as tensors: the named datasets, user arrays, and what a likelihood's support admits.

dataset.py  the Dataset (splits as tensors, `prepare`), supports, binarization, standardization
load.py     load_dataset (a name or a path → Dataset), tensor_dataset (in-memory arrays)
files.py    user data: .npy, .npz, .csv, image folders
tables.py   a table's schema: column kinds (inferred or given), levels, training statistics; cells → codes
table_files.py  tables from CSV and Parquet files (support "table"), the penguins CSV
builtin.py  digits and wine (embedded in resources/), Frey faces
mnist.py    MNIST, Fashion-MNIST, binarized MNIST (and the Frey faces file): download, MD5 check, parse
"""

from .dataset import (
    BINARIZE,
    EVAL_BINARIZATION_SEED,
    MIN_SPREAD,
    SPLITS,
    SUPPORTS,
    Dataset,
    check_values,
    finalize,
    resolve_binarize,
    standardization,
)
from .images import folder_files
from .load import DATASETS, IN_MEMORY, MNIST_FAMILY, load_dataset, tensor_dataset

__all__ = [
    "BINARIZE",
    "DATASETS",
    "EVAL_BINARIZATION_SEED",
    "IN_MEMORY",
    "MIN_SPREAD",
    "MNIST_FAMILY",
    "SPLITS",
    "SUPPORTS",
    "Dataset",
    "check_values",
    "finalize",
    "folder_files",
    "load_dataset",
    "resolve_binarize",
    "standardization",
    "tensor_dataset",
]
