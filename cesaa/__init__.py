"""cesaa: multi-domain recommendation with sparse mixtures of experts (CESAA) and routing analysis."""

__version__ = "0.1.0"
