"""The gates this team puts in front of every merge of the spam filter."""

import pytest


@pytest.mark.seqgate(
    min_recall={"spam": 0.8, "ham": 0.97},
    min_precision={"spam": 0.85},
    min_macro_f1=0.9,
)
def test_spam_filter_quality():
    """Missing spam annoys users; flagging ham loses their messages. Gate both."""


@pytest.mark.seqgate(max_train_test_gap=0.1)
def test_not_overfitting():
    """The model must do on unseen messages about as well as on what it learnt from."""


@pytest.mark.seqgate(max_leakage=0.05)
def test_eval_set_is_not_training_data():
    """The SMS collection repeats messages: at most 5% of the test set may be in train."""


def test_spam_f1_in_a_test_body(seqgate):
    results = seqgate.check(min_f1={"spam": 0.8})
    assert results[0].value is not None
