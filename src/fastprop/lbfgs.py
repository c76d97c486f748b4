"""Kept so that ``from fastprop.lbfgs import LBFGS`` keeps working: L-BFGS-B lives in
:mod:`fastprop.optim.lbfgs` (``fastprop.optim.LBFGS``)."""
from fastprop.optim.lbfgs import LBFGS

__all__ = ["LBFGS"]
