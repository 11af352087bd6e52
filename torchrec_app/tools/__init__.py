"""Tools over trained runs and plans: plan inspection, benchmarks, explain / suggest-dims, export."""
