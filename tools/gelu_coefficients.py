"""The coefficients of csrc/gemm/gelu_poly.h: log2 Phi(-x) on [0, CUT] as a polynomial of degree DEGREE
in x, by interpolation at Chebyshev nodes of the float64 value (torch.special.log_ndtr), rounded to
float32 (summed by Horner's rule in float32 it is as accurate as in the Chebyshev variable, 2^-18.6
relative in Phi, and one instruction shorter). Prints the C++ table the header holds; tests/ops/test_gelu_poly.py checks the header
against it.

    python tools/gelu_coefficients.py
"""
import math
import re

import torch

CUT, DEGREE, NODES = 5.5, 10, 4000


def coefficients(cut=CUT, degree=DEGREE, nodes=NODES):
    """float32 monomial coefficients in x, the constant first."""
    import numpy as np
    from numpy.polynomial import chebyshev, polynomial

    t = np.cos(math.pi * (np.arange(nodes) + 0.5) / nodes)  # the nodes on [-1, 1]; x = (t + 1) * cut / 2
    x = torch.tensor((t + 1) * cut / 2, dtype=torch.float64)
    log2_phi = (torch.special.log_ndtr(-x) / math.log(2)).numpy()
    in_t = chebyshev.cheb2poly(chebyshev.chebfit(t, log2_phi, degree))
    in_x = np.zeros(degree + 1)
    for i, c in enumerate(in_t):  # t = 2x / cut - 1
        in_x[:i + 1] += c * polynomial.polypow([-1.0, 2.0 / cut], i)
    return [float(np.float32(c)) for c in in_x]


def table(coefs):
    """The header's line: hexadecimal literals, exactly the float32 values."""
    hexes = [re.sub(r"\.?0*p", "p", c.hex()) + "f" for c in coefs]
    return "constexpr float kGeluLog2Phi[%d] = {%s};" % (len(coefs), ", ".join(hexes))


if __name__ == "__main__":
    print(table(coefficients()))
