"""Evaluation of user tokens (FOUNDv2 sections 5-6, appendix C): pure numpy/torch/scikit-learn.

* :mod:`.config` — ``conf/eval.yaml`` (:class:`EvalConfig`, :func:`load_eval_config`);
* :mod:`.probes` — linear probes with AUC (scikit-learn) and KS (scipy);
* :mod:`.representations` — bag of codes, mean embeddings, TF-IDF, token histories;
* :mod:`.tokenizers` — train an MRQ-VAE on in-memory embeddings, token features, t-SNE panels;
* :mod:`.alignment_ablation` — pretext-task ablation of the alignment model (table 5);
* :mod:`.ablations` — codebook-design and source ablations (tables 3, 4);
* :mod:`.masknet` — MaskNet CTR model, HR@k; :mod:`.recommendation` — the CTR evaluation;
* :mod:`.storage` — on-disk table sizes;
* :mod:`.summary` — the results text (targets, protocols, notes) derived from config and data;
* :mod:`.report` — figures and the Markdown report.

The Spark side (world, encoding, Delta writes) lives in :mod:`pipelines.evaluation.eval_inputs` and
:mod:`pipelines.evaluation.eval_job` (orchestration only).
"""

from u2qt_core.evaluation.config import EvalConfig, load_eval_config
from u2qt_core.evaluation.masknet import MaskNet, hit_rate_at_k, train_masknet
from u2qt_core.evaluation.probes import ProbeResult, ks_statistic, linear_probe, probe_tasks, split_users
from u2qt_core.evaluation.representations import bag_of_codes, mean_embeddings, tfidf_features, token_histories
from u2qt_core.evaluation.storage import TableSize, storage_comparison, table_size

__all__ = [
    "EvalConfig",
    "load_eval_config",
    "MaskNet",
    "hit_rate_at_k",
    "train_masknet",
    "ProbeResult",
    "ks_statistic",
    "linear_probe",
    "probe_tasks",
    "split_users",
    "bag_of_codes",
    "mean_embeddings",
    "tfidf_features",
    "token_histories",
    "TableSize",
    "storage_comparison",
    "table_size",
]
