"""Synthetic FaceForensics++ trees for tests and for users without FF++ (`make_ffpp_tree`),
and the cross-dataset test sets Celeb-DF v2 and DFDC in their real layouts."""

from ffjax.testing.cross_trees import CelebDFTree, DFDCTree, make_celebdf_tree, make_dfdc_tree
from ffjax.testing.forgeries import DIFF_THRESHOLD, METHODS
from ffjax.testing.regions import RegionTrack
from ffjax.testing.subjects import default_real_subjects, draw_face
from ffjax.testing.tree import (
    CRF,
    GENERATED_MARKER,
    FakeTree,
    FakeVideo,
    load_official_splits,
    make_ffpp_tree,
    official_pairs,
)
from ffjax.testing.videos import corrupt_file, read_video, truncate_mask_video, write_video

__all__ = [
    "CRF",
    "DIFF_THRESHOLD",
    "GENERATED_MARKER",
    "METHODS",
    "CelebDFTree",
    "DFDCTree",
    "FakeTree",
    "FakeVideo",
    "RegionTrack",
    "corrupt_file",
    "default_real_subjects",
    "draw_face",
    "load_official_splits",
    "make_celebdf_tree",
    "make_dfdc_tree",
    "make_ffpp_tree",
    "official_pairs",
    "read_video",
    "truncate_mask_video",
    "write_video",
]
