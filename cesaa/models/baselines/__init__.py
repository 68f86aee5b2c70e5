"""Multi-domain baselines.  Importing this package registers each one in :mod:`cesaa.models.registry`.

- ``mlp``: one MLP with the domain as a feature;  ``shared_bottom``: shared MLP + per-domain towers;
- ``mmoe``: shared experts, per-domain softmax gates and towers;  ``ple``: stacked CGC levels;
- ``star``: partitioned normalization + star-topology FCN + auxiliary domain network;
- ``adasparse``: a domain-aware pruner zeroes neurons per row;  ``pepnet``: EPNet + PPNet gates;
- ``hmoe``: MMoE per domain + a gradient-cut label-space mix of every domain's prediction;
- ``m2m``: meta attention over experts and a meta tower, their weights generated from the domain.
"""

from cesaa.models.baselines.adasparse import AdaSparse
from cesaa.models.baselines.hmoe import HMoE
from cesaa.models.baselines.m2m import M2M
from cesaa.models.baselines.mlp import DomainMLP
from cesaa.models.baselines.mmoe import MMoE
from cesaa.models.baselines.pepnet import PEPNet
from cesaa.models.baselines.ple import PLE
from cesaa.models.baselines.shared_bottom import SharedBottom
from cesaa.models.baselines.star import STAR

__all__ = ["PLE", "STAR", "AdaSparse", "DomainMLP", "HMoE", "M2M", "MMoE", "PEPNet", "SharedBottom"]
