"""Routing analysis: does each domain get its own experts?  Numpy in, plain data out."""

from __future__ import annotations

from analysis.measures import (
    activation,
    domain_similarity,
    expert_load,
    gating_entropy,
    load_balance,
    mi_ceiling,
    mutual_information,
    mutual_information_from_assignments,
    row_entropy,
    row_entropy_by_domain,
    summarize,
)
from analysis.stats import RoutingStats
from analysis.validation import RoutingArrays, check_routing_arrays

__all__ = [
    "RoutingArrays",
    "RoutingStats",
    "activation",
    "check_routing_arrays",
    "domain_similarity",
    "expert_load",
    "gating_entropy",
    "load_balance",
    "mi_ceiling",
    "mutual_information",
    "mutual_information_from_assignments",
    "row_entropy",
    "row_entropy_by_domain",
    "summarize",
]

# ---- embeddings, figures and the report (cesaa report) ------------------------------------------
from analysis import figures  # noqa: E402
from analysis.embeddings import (  # noqa: E402
    cached_projection,
    embedding_cache_path,
    expert_output_points,
    project,
)
from analysis.report import Report, build_report, write_report  # noqa: E402

__all__ += [
    "Report",
    "build_report",
    "cached_projection",
    "embedding_cache_path",
    "expert_output_points",
    "figures",
    "project",
    "write_report",
]

# ---- collection, causal tests, planted truth, comparison, alarms ---------------------------------
from analysis.alarms import (  # noqa: E402
    Alarm,
    AlarmThresholds,
    health_alarms,
    prediction_std_per_domain,
)
from analysis.capabilities import routing_capabilities  # noqa: E402
from analysis.causal import k_curve, knockout_importance  # noqa: E402
from analysis.collect import Collection, EmbeddingSample, collect  # noqa: E402
from analysis.compare import (  # noqa: E402
    Alignment,
    Comparison,
    activation_evolution,
    align_experts,
    align_experts_on_profiles,
    align_experts_on_rows,
    aligned_activation,
    coassignment,
    compare,
    read_routing_snapshots,
    routing_evolution,
)
from analysis.information import mi_table  # noqa: E402
from analysis.truth import (  # noqa: E402
    TruthRecovery,
    overlap_score_ceiling,
    recovery_table,
    truth_recovery,
)

__all__ += [
    "Alarm",
    "Alignment",
    "AlarmThresholds",
    "Collection",
    "Comparison",
    "EmbeddingSample",
    "TruthRecovery",
    "activation_evolution",
    "align_experts",
    "align_experts_on_profiles",
    "align_experts_on_rows",
    "coassignment",
    "aligned_activation",
    "collect",
    "compare",
    "health_alarms",
    "k_curve",
    "knockout_importance",
    "mi_table",
    "overlap_score_ceiling",
    "prediction_std_per_domain",
    "read_routing_snapshots",
    "recovery_table",
    "routing_capabilities",
    "routing_evolution",
    "truth_recovery",
]

# ---- routing records (docs/record.md): write any gated model once, read it without the model -----
from analysis.records import (  # noqa: E402
    GateSpec,
    Record,
    RecordError,
    RecordWriter,
    open_record,
    record,
)
from analysis.records.collection import record_collection  # noqa: E402

__all__ += [
    "GateSpec",
    "Record",
    "RecordError",
    "RecordWriter",
    "open_record",
    "record",
    "record_collection",
]
