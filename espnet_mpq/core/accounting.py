"""Exact storage accounting of a (partly) quantized model.

For every quantized layer l with n_l weights, C_l output channels and bit-width b_l
(the fixed one, or argmax(lambda) while searching):

    bits_l = n_l * b_l + C_l * SCALE_BITS          (codes + one float32 scale per channel)

Every other parameter is stored as float32. Training-only state (the latent float
weight, the scales of candidates not chosen, the architecture logits) is not stored.

    total_bits = sum_l bits_l + 32 * (float parameters)
    compression_ratio = 32 * (parameters of the float model) / total_bits

where the float model's parameters are the quantized weights plus the float
parameters (no scales, no logits).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from espnet_mpq.core.transform import expected_total_bits, quantized_layers

FLOAT_BITS = 32
SCALE_BITS = 32

__all__ = ["LayerStorage", "StorageReport", "storage_report", "expected_size_mb", "FLOAT_BITS", "SCALE_BITS"]


@dataclass(frozen=True)
class LayerStorage:
    name: str
    shape: tuple[int, ...]
    bits: int

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def storage_bits(self) -> int:
        return self.numel * self.bits + self.shape[0] * SCALE_BITS


@dataclass(frozen=True)
class StorageReport:
    """Storage of one module: quantized layers and float parameters."""

    layers: tuple[LayerStorage, ...]
    float_params: int
    float_param_names: tuple[str, ...] = field(repr=False, default=())

    @property
    def quantized_params(self) -> int:
        return sum(layer.numel for layer in self.layers)

    @property
    def total_params(self) -> int:
        """Parameters of the float model: quantized weights + float parameters."""
        return self.quantized_params + self.float_params

    @property
    def total_bits(self) -> int:
        return sum(layer.storage_bits for layer in self.layers) + FLOAT_BITS * self.float_params

    @property
    def compression_ratio(self) -> float:
        return FLOAT_BITS * self.total_params / self.total_bits

    @property
    def average_bits(self) -> float:
        """Parameter-weighted bit-width over quantized weights (scales not included)."""
        q = self.quantized_params
        return sum(layer.numel * layer.bits for layer in self.layers) / q if q else float(FLOAT_BITS)

    @property
    def size_mb(self) -> float:
        return self.total_bits / 8 / 1e6

    def as_dict(self) -> dict:
        return {
            "total_params": self.total_params,
            "quantized_params": self.quantized_params,
            "float_params": self.float_params,
            "average_bits": self.average_bits,
            "total_bits": self.total_bits,
            "size_mb": self.size_mb,
            "compression_ratio": self.compression_ratio,
            "bits_per_layer": {layer.name: layer.bits for layer in self.layers},
        }


def _quantized(module: nn.Module) -> list[tuple[str, torch.Tensor, nn.Module]]:
    """(layer name, latent weight, supernet) of every quantized layer of ``module``."""
    modules = dict(module.named_modules())
    return [(name, modules[name].parametrizations.weight.original, supernet)
            for name, supernet in quantized_layers(module)]


def _float_parameters(module: nn.Module, quantized: list) -> tuple[list[str], int]:
    """Names and element count of the parameters stored as floats: all but the quantized layers'
    latent weights and their supernets' own parameters (scales, logits)."""
    owned = {id(latent) for _, latent, _ in quantized}
    owned.update(id(p) for _, _, supernet in quantized for p in supernet.parameters())
    names, count = [], 0
    for name, p in module.named_parameters():
        if id(p) not in owned:
            names.append(name)
            count += p.numel()
    return names, count


def storage_report(module: nn.Module) -> StorageReport:
    """Account the storage of ``module`` (a whole model or a sub-module such as the SSL upstream)."""
    quantized = _quantized(module)
    layers = [LayerStorage(name, tuple(latent.shape), supernet.chosen_bits) for name, latent, supernet in quantized]
    float_names, float_params = _float_parameters(module, quantized)
    return StorageReport(tuple(layers), float_params, tuple(float_names))



def expected_size_mb(module: nn.Module) -> torch.Tensor:
    """Expected storage in MB, differentiable in the architecture logits:

        (sum_l (n_l E_bits^l + C_l SCALE_BITS) + FLOAT_BITS * float parameters) / 8 / 1e6

    Equals ``storage_report(module).size_mb`` once every layer's bit-width is fixed. Computed
    on the logits' device (no copy to the host, which would wait for the device once per layer),
    with ``expected_total_bits``'s few operators per candidate set.
    """
    quantized = _quantized(module)
    constant = FLOAT_BITS * _float_parameters(module, quantized)[1]
    if not quantized:
        return torch.tensor(constant / 8 / 1e6)
    constant += sum(latent.shape[0] * SCALE_BITS for _, latent, _ in quantized)
    return (expected_total_bits([supernet for _, _, supernet in quantized]) + constant) / 8 / 1e6
