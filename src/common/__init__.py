"""What every other package uses: errors, paths, files, images, devices and memory."""
