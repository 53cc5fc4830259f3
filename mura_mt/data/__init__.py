"""Data for training and evaluation: the MURA index (``read_mura_index``), the synthetic MURA and DICOM generators,
the decoded-image cache, datasets and device-side augmentation. May import ``imaging`` and the shared root modules;
serving (``inference``) never imports it.
"""

from mura_mt.data.index import MuraIndexError, read_csv_index, read_mura_index, split_by_patient

__all__ = ["MuraIndexError", "read_csv_index", "read_mura_index", "split_by_patient"]
