"""u2qt_core: framework-free PyTorch core of U2QT / FOUNDv2 (tokenizer, encoders, alignment)."""
