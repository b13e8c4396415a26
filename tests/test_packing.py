"""Specification of bit packing, storage accounting and the packed model file."""
import os
import stat
import struct

import pytest
import torch
from torch import nn

from espnet_mpq.core.accounting import expected_size_mb, storage_report
from espnet_mpq.core.packed_file import PackedFileError, is_packed_file, load_packed, read_packed, save_packed
from espnet_mpq.core.packing import pack_codes, packed_nbytes, unpack_codes
from espnet_mpq.core.primitives import qmax
from espnet_mpq.core.transform import bit_widths, initialize_scales, prepare, quantized_layers


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (13, 3, 3)])
def test_pack_unpack_round_trips_exactly(bits, shape):
    g = torch.Generator().manual_seed(bits)
    q = qmax(bits)
    if bits == 1:
        codes = torch.randint(0, 2, shape, generator=g) * 2 - 1
    else:
        codes = torch.randint(-q, q + 1, shape, generator=g)
    data = pack_codes(codes.to(torch.int8), bits)
    assert len(data) == packed_nbytes(codes.numel(), bits)
    assert torch.equal(unpack_codes(data, bits, shape), codes.to(torch.int8))


def test_codes_off_the_grid_are_rejected():
    with pytest.raises(ValueError, match=r"2-bit codes must lie in \[-1, 1\]"):
        pack_codes(torch.tensor([2], dtype=torch.int8), 2)


def model_with_mixed_bits(width=64, depth=3, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)], nn.LayerNorm(width))
    prepare(model, candidate_bits=[1, 2, 4, 8])
    for i, (_, s) in enumerate(quantized_layers(model)):
        s.fix(i % 4)
    initialize_scales(model)
    return model.eval()


def test_storage_accounting_counts_codes_scales_and_float_parameters_exactly():
    model = model_with_mixed_bits(width=10, depth=3)  # bits 1, 2, 4
    report = storage_report(model)
    weights, channels, floats = 100, 10, 3 * 10 + 2 * 10  # biases + LayerNorm
    assert report.total_params == 3 * weights + floats
    assert report.total_bits == weights * (1 + 2 + 4) + 3 * channels * 32 + floats * 32
    assert report.compression_ratio == pytest.approx(32 * report.total_params / report.total_bits)
    assert report.average_bits == pytest.approx(7 / 3)


def test_accounting_of_a_sub_module_covers_only_that_module():
    model = model_with_mixed_bits(width=10, depth=3)
    assert storage_report(model[0]).total_params == 110


def test_packed_file_loads_back_into_a_float_model_with_the_same_outputs(tmp_path):
    model = model_with_mixed_bits()
    save_packed(model, tmp_path / "m.mpq", {"note": "x"})
    float_model = nn.Sequential(*[nn.Linear(64, 64) for _ in range(3)], nn.LayerNorm(64))
    packed = load_packed(float_model, tmp_path / "m.mpq")
    x = torch.randn(4, 64)
    assert torch.equal(float_model(x), model(x))
    assert packed.metadata == {"note": "x"}


def test_packed_file_restores_bit_widths_in_a_quantized_model(tmp_path):
    model = model_with_mixed_bits()
    save_packed(model, tmp_path / "m.mpq")
    twin = nn.Sequential(*[nn.Linear(64, 64) for _ in range(3)], nn.LayerNorm(64))
    prepare(twin, candidate_bits=[1, 2, 4, 8])
    load_packed(twin.eval(), tmp_path / "m.mpq")
    x = torch.randn(4, 64)
    assert bit_widths(twin) == bit_widths(model)
    assert torch.equal(twin(x), model(x))


def test_packed_file_size_is_within_two_percent_of_the_accounting(tmp_path):
    model = model_with_mixed_bits(width=1024, depth=3)  # ~3.1 M parameters
    size = save_packed(model, tmp_path / "m.mpq")
    expected = storage_report(model).total_bits / 8
    assert abs(size - expected) / expected < 0.02


@pytest.fixture
def packed_path(tmp_path):
    path = tmp_path / "m.mpq"
    save_packed(model_with_mixed_bits(), path)
    return path


def test_a_truncated_file_is_reported(packed_path):
    packed_path.write_bytes(packed_path.read_bytes()[:-10])
    with pytest.raises(PackedFileError, match="truncated"):
        read_packed(packed_path)


def test_a_corrupt_payload_is_reported(packed_path):
    data = bytearray(packed_path.read_bytes())
    data[-5] ^= 0xFF
    packed_path.write_bytes(bytes(data))
    with pytest.raises(PackedFileError, match="corrupt"):
        read_packed(packed_path)


def test_a_file_of_another_format_version_is_reported(packed_path):
    data = bytearray(packed_path.read_bytes())
    struct.pack_into("<I", data, 8, 99)
    packed_path.write_bytes(bytes(data))
    with pytest.raises(PackedFileError, match="version 99.*reads version 2 only: re-export"):
        read_packed(packed_path)


def test_a_changed_byte_in_the_header_is_reported(packed_path):
    data = bytearray(packed_path.read_bytes())
    at = data.index(b'"offset":') + len(b'"offset":')  # the first layer's code offset, a digit
    data[at] = ord("1") if data[at] != ord("1") else ord("2")
    packed_path.write_bytes(bytes(data))
    with pytest.raises(PackedFileError, match="m.mpq is corrupt: header checksum mismatch"):
        read_packed(packed_path)


@pytest.mark.parametrize("content", [b"", b"MPQ", b"MPQPACK\0\x02"])
def test_an_empty_or_tiny_file_is_reported_by_name(tmp_path, content):
    path = tmp_path / "tiny.mpq"
    path.write_bytes(content)
    with pytest.raises(PackedFileError, match="tiny.mpq"):
        read_packed(path)


def test_a_damaged_magic_is_neither_packed_nor_a_checkpoint(packed_path):
    data = bytearray(packed_path.read_bytes())
    data[0] ^= 0xFF
    packed_path.write_bytes(bytes(data))
    with pytest.raises(PackedFileError, match="m.mpq is neither an espnet_mpq packed model file nor a torch"):
        is_packed_file(packed_path)


def test_torch_checkpoints_are_told_apart_and_checked(packed_path, tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(100)}, path)
    assert is_packed_file(packed_path) and not is_packed_file(path)
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(PackedFileError, match="model.pth is a damaged torch checkpoint"):
        is_packed_file(path)


def test_the_packed_file_is_world_readable_and_leaves_no_temporary_file(tmp_path):
    old = os.umask(0o022)
    try:
        save_packed(model_with_mixed_bits(), tmp_path / "m.mpq")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.mpq").stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mpq"]


def test_an_interrupted_save_leaves_no_temporary_file(tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_packed(model_with_mixed_bits(), tmp_path / "m.mpq")
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_packed_is_reported(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(PackedFileError, match="not an espnet_mpq packed model file"):
        read_packed(path)


def test_a_model_whose_layers_do_not_match_is_reported(packed_path):
    wider = nn.Sequential(*[nn.Linear(64, 64) for _ in range(2)], nn.Linear(64, 32), nn.LayerNorm(64))
    with pytest.raises(PackedFileError, match=r"layer '2': packed shape \(64, 64\) != model shape \(32, 64\)"):
        load_packed(wider, packed_path)
    deeper = nn.Sequential(*[nn.Linear(64, 64) for _ in range(4)], nn.LayerNorm(64))
    prepare(deeper, candidate_bits=[4])
    with pytest.raises(PackedFileError, match=r"quantized layers are missing from the packed file: \['3'\]"):
        load_packed(deeper, packed_path)


def test_expected_size_equals_the_accounting_once_bits_are_fixed():
    model = model_with_mixed_bits(width=10, depth=3)
    assert expected_size_mb(model).item() == pytest.approx(storage_report(model).size_mb, rel=1e-6)


def test_expected_size_stays_on_the_logits_device():
    """On a GPU a copy to the host per layer would wait for the device (meta stands for it)."""
    model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 10))
    prepare(model, candidate_bits=[2, 8])
    assert expected_size_mb(model.to("meta")).device.type == "meta"


def test_expected_size_is_differentiable_and_falls_as_logits_favour_fewer_bits():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 10))
    prepare(model, candidate_bits=[2, 8])
    size = expected_size_mb(model)
    size.backward()
    for _, s in quantized_layers(model):
        assert s.arch_logits.grad[0] < 0 < s.arch_logits.grad[1]  # more weight on 2 bits -> smaller
