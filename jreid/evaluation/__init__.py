"""Evaluation: distances, ranking metrics (CMC, mAP, mINP) and result tables."""

from jreid.evaluation.distance import compute_distance
from jreid.evaluation.distance import iter_distance_blocks
from jreid.evaluation.distance import normalize
from jreid.evaluation.metrics import evaluate_features
from jreid.evaluation.metrics import evaluate_rank
from jreid.evaluation.metrics import format_results_table
from jreid.evaluation.metrics import RankResult
