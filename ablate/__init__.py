"""ablate: reproducible ablation studies of local attention and dynamic depth-wise convolution.

Importing the package registers every model with timm, so ``timm.create_model("dwnet_tiny")``
works after ``import ablate``.
"""

from ablate import models  # noqa: F401  (registers the models with timm)

__version__ = "0.1.0"
