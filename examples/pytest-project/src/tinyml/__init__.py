"""Tiny numeric kernels: the code under test of the example project."""

from .kernels import matmul, softmax
from .tokenize import tokenize

__all__ = ["matmul", "softmax", "tokenize"]
