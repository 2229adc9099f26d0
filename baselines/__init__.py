"""Selectors HullFT is compared against; each obeys hullft.multiset's contract."""
