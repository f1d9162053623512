"""needle NDArray backend package (the Python side lands with the ndpy branch)."""
