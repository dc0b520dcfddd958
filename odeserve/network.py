"""The network's shape, in one place: layer sizes and the number of weights (no torch).

The API checks a problem's size against the server's limits with these, and the solver builds
its flat parameter vector from them.
"""

from __future__ import annotations

from odeserve.spec import NetworkOptions


def layer_sizes(network: NetworkOptions, inputs: int, outputs: int) -> list[int]:
    """``[inputs, width, ..., width, outputs]`` with ``depth`` hidden layers."""
    return [inputs, *([network.width] * network.depth), outputs]


def parameter_count(sizes: list[int]) -> int:
    """Weights and biases of a fully connected network with these layer sizes."""
    return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def output_layer(sizes: list[int]) -> slice:
    """The output layer's weights and biases in the flat parameter vector (they come last)."""
    total = parameter_count(sizes)
    return slice(total - (sizes[-2] * sizes[-1] + sizes[-1]), total)
