"""Evaluation: distances, metrics (CMC, mAP, mINP, CUHK03, ROC), re-ranking, query expansion.

Top-k retrieval (faiss or numpy) is `jreid.evaluation.search.search(query, gallery, k)`.
"""

from jreid.evaluation.distance import compute_distance
from jreid.evaluation.distance import iter_distance_blocks
from jreid.evaluation.distance import normalize
from jreid.evaluation.metrics import evaluate_cuhk03
from jreid.evaluation.metrics import evaluate_features
from jreid.evaluation.metrics import evaluate_rank
from jreid.evaluation.metrics import format_results_table
from jreid.evaluation.metrics import RankResult
from jreid.evaluation.qaconv_rerank import qaconv_rerank_tlift
from jreid.evaluation.query_expansion import alpha_query_expansion
from jreid.evaluation.query_expansion import average_query_expansion
from jreid.evaluation.query_expansion import flip_average
from jreid.evaluation.query_expansion import normalize_features
from jreid.evaluation.rerank import jaccard_distance
from jreid.evaluation.rerank import k_reciprocal_rerank
from jreid.evaluation.rerank import rerank_features
from jreid.evaluation.roc import RocResult
from jreid.evaluation.tlift import split_times
