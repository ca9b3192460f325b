"""Keras dtypes on torch, drawn so that float and non-float both come early."""

from hypothesis import strategies as st

FLOAT = ("float32", "float16", "bfloat16", "float64")
COMPLEX = ("complex64", "complex128")
INT = ("int32", "int8", "int16", "int64", "uint8")
BOOL = ("bool",)
ALL = FLOAT + COMPLEX + INT + BOOL
# torch has no matmul for bool; Keras computes it in floatx and casts back.
MATMUL = ALL

float_dtypes = st.sampled_from(FLOAT + COMPLEX)
non_float_dtypes = st.sampled_from(INT + BOOL)


def dtypes(allowed=ALL):
    """one_of picks a family first, so a handful of examples covers both."""
    floats = [d for d in FLOAT + COMPLEX if d in allowed]
    others = [d for d in INT + BOOL if d in allowed]
    return st.one_of(*(st.sampled_from(group) for group in (floats, others) if group))
