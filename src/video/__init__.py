"""Stylising a video frame after frame with temporal consistency (Ruder et al. 2016): `python -m src.video`."""
