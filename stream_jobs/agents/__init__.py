"""Thin Faust agents over the pure job functions, one module per job."""
