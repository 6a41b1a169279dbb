"""tierstore: an S3-compatible object store for machine-learning teams."""

__version__ = "0.1.0"
