"""The frozen VGG19 feature extractor: layer names, weights, preprocessing, receptive fields."""
