"""What the backbone's units respond to: the top-k patch search, activation maximisation, the grids
and the `src.visualize` app."""
