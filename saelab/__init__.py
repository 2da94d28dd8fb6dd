"""SAE Lab: an offline interpretability workbench for sparse autoencoders on language models.

Data flows one way: model -> activations -> sae -> features -> steering | probing | circuits |
hypotheses -> reports -> pages. Each stage is a subpackage or module named after its concept.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
