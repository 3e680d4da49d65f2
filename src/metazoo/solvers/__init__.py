"""Numerical solvers shared by several algorithms, each tested once against a reference.

One job per module; every tensor solver is batched over the tasks of a meta-batch (leading
dimension `B`) and differentiable w.r.t. its inputs:

* `conjugate_gradient`: `A x = b` for an SPD `A` given as a product (iMAML).
* `ridge`: ridge regression in primal or dual (Woodbury) form (R2-D2, MetaOptNet-RR).
* `logistic`: L2-regularised logistic regression by Newton/IRLS steps (LR-D2).
* `svm`: the Crammer-Singer multi-class SVM dual QP, by an interior-point method with an
  implicit (KKT) gradient (MetaOptNet-SVM).
* `bayesian_linear`: Bayesian linear regression with a matrix-normal prior (ALPaCA).
"""

from metazoo.solvers.bayesian_linear import blr_log_likelihood, blr_posterior, blr_predictive
from metazoo.solvers.conjugate_gradient import conjugate_gradient
from metazoo.solvers.logistic import logistic_regression
from metazoo.solvers.ridge import ridge_regression
from metazoo.solvers.svm import svm_dual, svm_logits

__all__ = [
    "blr_log_likelihood",
    "blr_posterior",
    "blr_predictive",
    "conjugate_gradient",
    "logistic_regression",
    "ridge_regression",
    "svm_dual",
    "svm_logits",
]
