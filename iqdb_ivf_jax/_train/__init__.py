"""Training: random keys and subsampling, k-means++ seeding, the Lloyd fit, and PQ
codebooks."""
