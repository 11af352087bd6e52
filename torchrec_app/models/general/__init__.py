"""General (non-sequential) recommenders: EASE and Multi-VAE over the user-item matrix."""
