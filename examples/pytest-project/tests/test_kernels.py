import math
import os

import pytest

from tinyml import matmul, softmax


def test_softmax_sums_to_one():
    assert math.isclose(sum(softmax([1.0, 2.0, 3.0])), 1.0)


def test_softmax_is_stable_for_large_inputs():
    out = softmax([1000.0, 1000.0])
    assert out == [0.5, 0.5]


def test_softmax_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        softmax([])


@pytest.mark.parametrize("n", [1, 8, 32])
def test_matmul_identity(n):
    eye = [[1.0 if i == j else 0.0 for j in range(n)] for i in range(n)]
    m = [[float(i * n + j) for j in range(n)] for i in range(n)]
    assert matmul(m, eye) == m


def test_matmul_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        matmul([[1.0, 2.0]], [[1.0, 2.0]])


@pytest.mark.skipif(not os.environ.get("CUDA_VISIBLE_DEVICES"), reason="no GPU reserved for this test")
def test_matmul_on_the_gpu():
    assert os.environ["CUDA_VISIBLE_DEVICES"]
