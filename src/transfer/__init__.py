"""One style-transfer run: config schema and checks, inputs, the LightningModule, the Trainer,
checkpoints and signals, metrics, callbacks and loggers, and `stylize`, which ties them together."""
