"""Data modules: each data set is one file holding its raw arrays; batching and augmentation are shared."""
