"""AlexNet split into towers as Krizhevsky et al. built it in 2012, as timm models.

``import timm_alexnet_split`` registers ``alexnet_split_1``, ``alexnet_split_2`` and
``alexnet_split_3`` with timm, so ``timm.create_model('alexnet_split_2')`` works anywhere.
"""
from .lrn import TowerLRN, lrn
from .model import AlexNetSplit, Tower, tower_widths
from .version import __version__

__all__ = ['AlexNetSplit', 'Tower', 'TowerLRN', 'lrn', 'tower_widths', '__version__']
