"""Multirun sweeps: the wrapper of one job, reading a sweep folder, summary.csv and the contact sheet."""
