"""Pure-Python numeric kernels."""

import math


def softmax(xs):
    """The softmax of a list of numbers, stable for large inputs."""
    if not xs:
        raise ValueError("softmax of an empty list")
    top = max(xs)
    exps = [math.exp(x - top) for x in xs]
    total = sum(exps)
    return [e / total for e in exps]


def matmul(a, b):
    """The product of two matrices given as lists of rows."""
    if not a or not b or len(a[0]) != len(b):
        raise ValueError(f"shapes do not match: {len(a)}x{len(a[0]) if a else 0} @ {len(b)}x?")
    cols = list(zip(*b))
    return [[sum(x * y for x, y in zip(row, col)) for col in cols] for row in a]
