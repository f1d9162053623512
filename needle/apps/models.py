"""The course's hw4 models (``needle.apps.models``): ``ConvBN`` and ``ResNet9``.

Importing this module does not reseed NumPy (the course's file does; a library must not).
"""
from .models_conv import ConvBN, ResNet9  # noqa: F401
