"""Configuration: the validated pipeline settings, where conf/ lives, how a config location is read."""
