"""The data layer: labelled examples as the training driver sees them.

One interface (:class:`Dataset`) over every source: :class:`FolderDataset`, a folder with one
sub-folder per class (:func:`scan_folder`), :class:`LabelFileDataset`, images listed in a CSV
label file (the labels of any task), and :class:`ArrayDataset`, numpy arrays passed through
the Python API; texts (:class:`TextDataset`: in memory, :class:`TextFolderDataset`, CSV and
JSONL tables) and vectors (:class:`VectorDataset`: arrays, ``.npz``, ``.npy``, CSV tables).
Inputs are decoded by :mod:`tlcore.inputs`, the same code prediction uses. Every problem with
the data raises :class:`~tlcore.errors.DataError` with a hint.
"""

from __future__ import annotations

from tlcore.data.arrays import ArrayDataset, ArraysInput
from tlcore.data.augment import AUGMENTATIONS, augment
from tlcore.data.dataset import DEFAULT_CACHE_BYTES, Dataset
from tlcore.data.folder import FolderDataset, scan_folder
from tlcore.data.labelfile import LabelFileDataset
from tlcore.data.load import load_datasets
from tlcore.data.split import (
    AUTO_VAL_SPLIT,
    MIN_CLASS_FOR_VAL,
    MIN_VAL_IMAGES,
    MIN_VAL_PER_CLASS,
    split,
)
from tlcore.data.text import TextDataset, TextFolderDataset, read_table, read_text_table
from tlcore.data.vectors import VectorDataset, read_npy, read_npz, read_vector_table
from tlcore.inputs.image import IMAGE_EXTENSIONS, RESAMPLE, image_array, image_files, load_image

__all__ = [
    "AUGMENTATIONS",
    "AUTO_VAL_SPLIT",
    "DEFAULT_CACHE_BYTES",
    "IMAGE_EXTENSIONS",
    "MIN_CLASS_FOR_VAL",
    "MIN_VAL_IMAGES",
    "MIN_VAL_PER_CLASS",
    "RESAMPLE",
    "ArrayDataset",
    "ArraysInput",
    "Dataset",
    "FolderDataset",
    "LabelFileDataset",
    "TextDataset",
    "TextFolderDataset",
    "VectorDataset",
    "augment",
    "image_array",
    "image_files",
    "load_datasets",
    "load_image",
    "read_npy",
    "read_npz",
    "read_table",
    "read_text_table",
    "read_vector_table",
    "scan_folder",
    "split",
]
