"""All drawing, without torch or Lightning: text and numbers, the loss plot, the GIF, the contact
sheet and side-by-side strips."""
