"""Keras dtypes on torch, drawn so that float and non-float both come early."""

from hypothesis import strategies as st

FLOAT = ("float32", "float16", "bfloat16", "float64")
COMPLEX = ("complex64", "complex128")
INT = ("int32", "int8", "int16", "int64", "uint8")
BOOL = ("bool",)
ALL = FLOAT + COMPLEX + INT + BOOL
# torch has no matmul for bool; Keras computes it in floatx and casts back.
MATMUL = ALL



def dtypes(allowed=ALL):
    """Float and non-float dtypes interleaved: both families are equally
    likely from the first example on, and shrinking tries float32, then int32."""
    floats = [d for d in FLOAT + COMPLEX if d in allowed]
    others = [d for d in INT + BOOL if d in allowed]
    interleaved = [d for pair in zip(floats, others) for d in pair]
    interleaved += floats[len(others):] + others[len(floats):]
    return st.sampled_from(interleaved)
