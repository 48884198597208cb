"""Scripts behind `make bench` and `make figure`, and the pictures of the docs."""
