"""Study files for `ffjax study` (see `ffjax.study`): `paper` is the paper's comparison on a
built FF++ dataset, `tiny` a few-minute version on the demo's data."""
