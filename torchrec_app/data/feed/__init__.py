"""The home-feed impression dataset (kind ``feed``): schema, batches, generation, preprocessing."""
