"""The method in plain torch, without Lightning or Hydra: loss terms, style losses, colour,
masks, the coarse-to-fine sizes and the L-BFGS optimiser."""
