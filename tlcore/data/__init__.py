"""The data layer: labelled examples as the training driver sees them.

Three sources, one interface (:class:`Dataset`): :class:`FolderDataset`, a folder with one
sub-folder per class (:func:`scan_folder`), :class:`LabelFileDataset`, images listed in a CSV
label file (the labels of any task), and :class:`ArrayDataset`, numpy arrays passed through
the Python API. Inputs are decoded by :mod:`tlcore.inputs`, the same code prediction
uses. Every problem with the data raises :class:`~tlcore.errors.DataError` with a hint.
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
    "augment",
    "image_array",
    "image_files",
    "load_datasets",
    "load_image",
    "scan_folder",
    "split",
]
