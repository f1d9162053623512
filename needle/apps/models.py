"""The course's hw4 models (``needle.apps.models``): ``ConvBN``, ``ResNet9``, ``LanguageModel``
(and needle's ``SmallCNN``).

Importing this module does not reseed NumPy (the course's file does; a library must not).
"""

from .models_conv import ConvBN, ResNet9, SmallCNN  # noqa: F401
from .models_lm import LanguageModel  # noqa: F401
