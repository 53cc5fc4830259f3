"""Data: the MURA index, the synthetic generator, preprocessing, the decoded-image cache and datasets."""

from mura_mt.data.index import MuraIndexError, read_csv_index, read_mura_index, split_by_patient

__all__ = ["MuraIndexError", "read_csv_index", "read_mura_index", "split_by_patient"]
