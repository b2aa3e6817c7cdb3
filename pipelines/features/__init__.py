"""Tokens as features: the user_features table and the sequence encoder over token histories."""
