"""Every name of the exercise contract (shared/CURRICULUM.md) is graded in its chapter."""

import pytest

from grader import assign
from grader.registry import chapter_ids, get_chapter

CONTRACT = {
    "01_linear_regression": ["synthetic_data", "data_iter", "linreg", "squared_loss", "sgd",
                             "gaussian_nll", "fit_normal_equation", "huber_loss"],
    "02_softmax": ["softmax", "logsumexp", "log_softmax", "cross_entropy", "accuracy",
                   "train_epoch"],
    "03_mlp": ["relu", "sigmoid", "tanh", "relu_grad", "sigmoid_grad", "tanh_grad",
               "init_mlp_params", "mlp_forward", "collapse_linear", "make_mlp"],
    "04_weight_decay": ["polynomial_features", "k_fold_split", "l2_penalty", "l1_penalty",
                        "weight_decay_sgd"],
    "05_dropout": ["dropout_layer", "DropoutMLP", "evaluate_loss"],
    "06_initialization": ["xavier_uniform_", "xavier_normal_", "kaiming_normal_", "init_weights",
                          "layer_gradient_norms"],
    "07_backprop": ["Linear", "ReLU", "Sigmoid", "Tanh", "SoftmaxCrossEntropy", "mlp_l2_backward",
                    "numerical_gradient"],
    "08_kaggle_house": ["preprocess", "log_rmse", "get_k_fold_data", "k_fold"],
    "09_training_pipeline": ["ArrayDataset", "build_model", "train_one_epoch",
                             "evaluate_accuracy"],
}


@pytest.mark.parametrize("cid", sorted(CONTRACT))
def test_contract_names_are_graded(cid):
    if cid not in assign.source_chapters():
        pytest.skip(f"{cid} is not written yet")
    assert cid in chapter_ids(), f"{cid} has a notebook but no checks module"
    graded = set(get_chapter(cid).exercises)
    missing = [n for n in CONTRACT[cid] if n not in graded]
    assert not missing, f"{cid} does not grade {missing}"


def test_every_chapter_with_checks_has_a_notebook():
    assert set(chapter_ids()) <= set(assign.source_chapters())
    assert set(chapter_ids()) <= set(CONTRACT)
