"""What the command-line apps share: start-up configuration, the error wrapper, Hydra callbacks."""
