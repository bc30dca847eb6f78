"""Active-learning strategies over prediction pools (pure numpy)."""
