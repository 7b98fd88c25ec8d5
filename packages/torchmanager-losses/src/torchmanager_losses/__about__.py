"""Version of torchmanager-losses, bumped together with the other torchmanager distributions."""

__version__ = "2.0.0a0"
