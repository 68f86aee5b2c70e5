"""Multi-domain baselines.  Importing this package registers each one in :mod:`cesaa.models.registry`.

- ``mlp``: one MLP with the domain as a feature;  ``shared_bottom``: shared MLP + per-domain towers;
- ``mmoe``: shared experts, per-domain softmax gates and towers;  ``ple``: stacked CGC levels;
- ``star``: partitioned normalization + star-topology FCN + auxiliary domain network;
- ``adasparse``: a domain-aware pruner zeroes neurons per row;  ``pepnet``: EPNet + PPNet gates.
"""

from cesaa.models.baselines.adasparse import AdaSparse
from cesaa.models.baselines.mlp import DomainMLP
from cesaa.models.baselines.mmoe import MMoE
from cesaa.models.baselines.pepnet import PEPNet
from cesaa.models.baselines.ple import PLE
from cesaa.models.baselines.shared_bottom import SharedBottom
from cesaa.models.baselines.star import STAR

__all__ = ["PLE", "STAR", "AdaSparse", "DomainMLP", "MMoE", "PEPNet", "SharedBottom"]
