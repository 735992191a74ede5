"""The audio front end: reading audio, features for `xval preprocess`, `xval augment`."""
