"""asrkd: Kaldi-style speech acoustic models, ensembles and knowledge distillation."""

__version__ = "0.1.0"
