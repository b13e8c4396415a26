"""Specification of the fused mixture quantizer (espnet_mpq.core.fused), its C kernel (espnet_mpq.core.native)
and its Triton kernel (espnet_mpq.core.triton_kernel, run here by Triton's interpreter on the CPU)."""
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from espnet_mpq.core import fused, native, triton_kernel
from espnet_mpq.core.fused import DEAD_CANDIDATE_THRESHOLD, fused_mix_fake_quantize
from espnet_mpq.core.primitives import fake_quantize, init_scale, mix_fake_quantize, qmax

SHAPES = {"linear": (12, 20), "conv1d": (6, 4, 3)}
CANDIDATE_SETS = [(b,) for b in range(1, 9)] + [(2, 4, 8), (1, 2, 3, 4, 8)]


def inputs(shape, bits, seed=0):
    """W, scales (n, C) clipping part of every channel (one learned scale negative), g (n,), dOut."""
    torch.manual_seed(seed)
    w = torch.randn(shape)
    scales = torch.stack([init_scale(w, b, "max") * 0.7 for b in bits])
    scales[0, 0] = -scales[0, 0]  # a learned scale that crossed zero: |s| is applied
    g = torch.softmax(torch.randn(len(bits)), dim=0)
    return w, scales, g, torch.randn(shape)


def values_and_grads(fn, w, scales, g, grad_out):
    w, scales, g = (t.clone().requires_grad_() for t in (w, scales, g))
    out = fn(w, scales, g)
    out.backward(grad_out)
    return {"W_eff": out.detach(), "dW": w.grad, "ds": scales.grad, "dg": g.grad}


STRATEGIES = {"loop": False, "broadcast": True}  # what torch.compile takes (the C kernel is not compiled)
HAS_COMPILER = shutil.which(os.environ.get("CC", "cc")) is not None
HAS_TRITON = importlib.util.find_spec("triton") is not None


def use_triton_interpreter(monkeypatch):
    """The Triton kernel on, run by Triton's interpreter on CPU tensors."""
    if not HAS_TRITON:
        pytest.skip("triton is not installed: the Triton kernel cannot be checked here")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("ESPNET_MPQ_TRITON", "1")
    assert triton_kernel.kernels() is not None


@pytest.fixture(params=["native", "loop", "broadcast", "triton"])
def broadcast(request, monkeypatch):
    """The four kernels of fused_mix_fake_quantize, as its ``broadcast`` argument: the C kernel
    (the CPU default), the eager candidate loop (ESPNET_MPQ_NATIVE=0), the broadcast, and the
    broadcast's Triton kernel (ESPNET_MPQ_TRITON=1, interpreted)."""
    if request.param == "native":
        if not HAS_COMPILER:
            pytest.skip("no C compiler: the C kernel cannot be built here")
        monkeypatch.setenv("ESPNET_MPQ_NATIVE", "1")
        assert native.kernels() is not None
    else:
        monkeypatch.setenv("ESPNET_MPQ_NATIVE", "0")
    if request.param == "triton":
        use_triton_interpreter(monkeypatch)
    return request.param in ("broadcast", "triton")


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("bits", CANDIDATE_SETS, ids=str)
def test_values_and_every_gradient_equal_mix_fake_quantize(shape, bits, broadcast):
    w, scales, g, grad_out = inputs(shape, bits)
    clipped = w.reshape(len(w), -1).abs() > qmax(bits[0]) * scales[0].abs()[:, None]
    assert clipped.any() and not clipped.all()  # both sides of the clip range are exercised
    ref = values_and_grads(lambda *a: mix_fake_quantize(*a, bits), w, scales, g, grad_out)
    got = values_and_grads(lambda *a: fused_mix_fake_quantize(*a, bits, dead_threshold=0.0, broadcast=broadcast),
                           w, scales, g, grad_out)
    for name in ref:
        assert ref[name].abs().sum() > 0, name  # the check can fail: every gradient is non-zero
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-6, msg=name)


def test_clipped_elements_get_no_weight_gradient():
    w = torch.tensor([[0.1, 0.26, 5.0, -5.0]], requires_grad=True)  # q = 3, s = 0.1: range |W| <= 0.3
    fused_mix_fake_quantize(w, torch.tensor([[0.1]]), torch.ones(1), (3,)).sum().backward()
    assert w.grad.tolist() == [[1.0, 1.0, 0.0, 0.0]]


@pytest.mark.parametrize("bits", range(1, 9))
def test_one_candidate_with_weight_one_is_bit_identical_to_fake_quantize(bits, broadcast):
    w, scales, _, _ = inputs(SHAPES["linear"], (bits,))
    w[0, :4] = scales[0, 0].abs() * torch.tensor([0.5, 1.5, -0.5, -2.5])  # ties: rounded half to even
    got = fused_mix_fake_quantize(w, scales, torch.ones(1), (bits,), broadcast=broadcast)
    assert torch.equal(got, fake_quantize(w, scales[0], bits))


def test_backward_keeps_no_per_candidate_tensor(broadcast):
    """Only the inputs are saved for backward: nothing of weight size beyond W itself."""
    w, scales, g, _ = inputs((64, 32), (1, 2, 3, 4, 8))
    w.requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fused_mix_fake_quantize(w, scales.requires_grad_(), g.requires_grad_(), (1, 2, 3, 4, 8), broadcast=broadcast)
    assert sum(t.numel() for t in saved if t.numel() >= w.numel()) == w.numel()


def test_a_weight_split_into_blocks_of_channels_gives_the_same_values_and_gradients(broadcast, monkeypatch):
    bits = (1, 2, 4, 8)
    w, scales, g, grad_out = inputs(SHAPES["conv1d"], bits)  # 6 channels of 12 elements
    monkeypatch.setattr(fused, "LOOP_BLOCK_ELEMENTS", 2 * 12)  # blocks of 2 channels
    monkeypatch.setattr(fused, "BROADCAST_BLOCK_ELEMENTS", 2 * 12 * len(bits))
    assert len(fused._row_blocks(w.reshape(6, -1), len(bits), broadcast, whole=False)) == 3
    ref = values_and_grads(lambda *a: mix_fake_quantize(*a, bits), w, scales, g, grad_out)
    got = values_and_grads(lambda *a: fused_mix_fake_quantize(*a, bits, dead_threshold=0.0, broadcast=broadcast),
                           w, scales, g, grad_out)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-6, msg=name)


def test_results_stay_valid_when_the_next_call_reuses_the_scratch_buffers(monkeypatch):
    """The candidate loop's scratch buffers are shared by every call: nothing returned may live there."""
    monkeypatch.setenv("ESPNET_MPQ_NATIVE", "0")
    bits = (2, 4, 8)
    call = lambda *a: fused_mix_fake_quantize(*a, bits, dead_threshold=0.0, broadcast=False)  # noqa: E731
    values_and_grads(call, *inputs(SHAPES["linear"], bits))  # the buffers grow to this weight's needs
    w, scales, g, grad_out = inputs(SHAPES["linear"], bits, seed=1)
    w, scales, g = (t.clone().requires_grad_() for t in (w, scales, g))
    out = call(w, scales, g)
    out.backward(grad_out)
    kept = [t.clone() for t in (out, w.grad, scales.grad, g.grad)]
    values_and_grads(call, *inputs(SHAPES["linear"], bits, seed=2))  # a forward and backward over the same buffers
    for before, after in zip(kept, (out, w.grad, scales.grad, g.grad)):
        assert torch.equal(before, after)


def test_the_default_strategy_loops_on_the_cpu_and_broadcasts_elsewhere(monkeypatch):
    chosen = []
    kernels = fused._kernels
    monkeypatch.setattr(fused, "_kernels", lambda compile, broadcast: chosen.append(broadcast) or kernels(compile, broadcast))
    for device in ("cpu", "meta"):
        w, scales, g, _ = (t.to(device) for t in inputs((4, 3), (2, 4)))
        fused_mix_fake_quantize(w, scales, g, (2, 4))
    assert chosen == [False, True]


def test_candidate_below_the_threshold_is_skipped_within_the_documented_bound(broadcast):
    if os.environ.get("ESPNET_MPQ_TRITON") == "1":
        pytest.skip("the Triton kernel computes every candidate (next test)")
    bits = (2, 4, 8)
    w, scales, _, grad_out = inputs(SHAPES["linear"], bits)
    g = torch.tensor([0.5 * DEAD_CANDIDATE_THRESHOLD, 0.3, 0.7 - 0.5 * DEAD_CANDIDATE_THRESHOLD])
    exact = values_and_grads(lambda *a: mix_fake_quantize(*a, bits), w, scales, g, grad_out)
    skipped = values_and_grads(lambda *a: fused_mix_fake_quantize(*a, bits, broadcast=broadcast),
                               w, scales, g, grad_out)
    assert skipped["dg"][0] == 0 and skipped["ds"][0].abs().sum() == 0  # candidate 0 cost nothing
    bound = g[0] * fake_quantize(w, scales[0], bits[0]).abs().max()
    assert 0 < (skipped["W_eff"] - exact["W_eff"]).abs().max() <= bound + 1e-6  # + float rounding
    assert ((skipped["dW"] - exact["dW"]).abs() <= g[0] * grad_out.abs() + 1e-6).all()
    torch.testing.assert_close(skipped["dg"][1:], exact["dg"][1:], rtol=1e-5, atol=1e-6)


def test_the_triton_kernel_computes_every_candidate_however_small_its_weight(monkeypatch):
    use_triton_interpreter(monkeypatch)
    bits = (2, 4, 8)
    w, scales, _, grad_out = inputs(SHAPES["linear"], bits)
    g = torch.tensor([0.5 * DEAD_CANDIDATE_THRESHOLD, 0.3, 0.7 - 0.5 * DEAD_CANDIDATE_THRESHOLD])
    exact = values_and_grads(lambda *a: mix_fake_quantize(*a, bits), w, scales, g, grad_out)
    got = values_and_grads(lambda *a: fused_mix_fake_quantize(*a, bits, broadcast=True), w, scales, g, grad_out)
    for name in exact:
        torch.testing.assert_close(got[name], exact[name], rtol=1e-5, atol=1e-6, msg=name)


def test_candidate_just_above_the_threshold_is_computed():
    bits = (2, 4)
    w, scales, _, grad_out = inputs(SHAPES["linear"], bits)
    g = torch.tensor([2 * DEAD_CANDIDATE_THRESHOLD, 1 - 2 * DEAD_CANDIDATE_THRESHOLD])
    got = values_and_grads(lambda *a: fused_mix_fake_quantize(*a, bits), w, scales, g, grad_out)
    assert got["dg"][0] != 0


def test_mismatched_scales_or_mixture_are_rejected_with_the_shapes():
    w = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"3 candidates .* got \(2, 4\) and \(3,\)"):
        fused_mix_fake_quantize(w, torch.ones(2, 4), torch.ones(3) / 3, (2, 4, 8))


@pytest.mark.parametrize("broadcast", STRATEGIES.values(), ids=STRATEGIES.keys())
def test_compiled_kernels_give_the_same_values_and_gradients(broadcast):
    bits = (1, 2, 4, 8)
    w, scales, g, grad_out = inputs(SHAPES["conv1d"], bits)
    eager = values_and_grads(lambda *a: fused_mix_fake_quantize(*a, bits, dead_threshold=0.0, broadcast=broadcast),
                             w, scales, g, grad_out)
    compiled = values_and_grads(lambda *a: fused_mix_fake_quantize(*a, bits, compile=True, broadcast=broadcast),
                                w, scales, g, grad_out)
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("broadcast", STRATEGIES.values(), ids=STRATEGIES.keys())
def test_compiled_kernels_compile_once_per_kind_of_weight(broadcast):
    """Later steps over the same weights (new values) compile nothing: the kernels hold no state
    that torch.compile would guard on (the eager loop's reused scratch buffers stay out of them)."""
    bits = (2, 4, 8)
    step = lambda *a: fused_mix_fake_quantize(*a, bits, compile=True, broadcast=broadcast)  # noqa: E731
    shapes = [SHAPES["linear"], (40, 30), SHAPES["conv1d"]]
    for shape in shapes:
        values_and_grads(step, *inputs(shape, bits))
    with torch._dynamo.config.patch(error_on_recompile=True):
        for shape in shapes:
            values_and_grads(step, *inputs(shape, bits, seed=3))


class HostToDevice(torch.utils._python_dispatch.TorchDispatchMode):
    """Records what brings host data to another device: a tensor built from Python data there
    (torch.tensor(..., device=...)) or an index op (a Python index list is built on the host and
    copied). On a GPU each such copy from pageable host memory waits for the device's queue."""

    def __init__(self, monkeypatch):
        super().__init__()
        self.ops: list[str] = []
        build = torch.tensor

        def tensor(data, *args, device=None, **kwargs):
            if device is not None and torch.device(device).type != "cpu":
                self.ops.append(f"torch.tensor({data!r}, device={device})")
            return build(data, *args, device=device, **kwargs)

        monkeypatch.setattr(torch, "tensor", tensor)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.ops.aten.index.Tensor, torch.ops.aten.index_put_.default):
            self.ops.append(str(func))
        if (func is torch.ops.aten._to_copy.default and args[0].device.type == "cpu"
                and kwargs.get("device") not in (None, torch.device("cpu"))):
            self.ops.append(f"{func} to {kwargs['device']}")
        return func(*args, **kwargs)


@pytest.mark.parametrize("bits", [(4,), (2, 4, 8), (1, 2, 3, 4, 8)], ids=str)
def test_a_step_on_a_device_brings_nothing_from_host_memory(bits, monkeypatch):
    """Forward and backward with every tensor on a non-CPU device (meta stands for a GPU, where
    every candidate is computed) copy no host data there after the first step: no index lists,
    no per-candidate constants built again (the first step builds them once per device)."""
    w, scales, g, grad_out = (t.to("meta") for t in inputs((12, 20), bits))
    w, scales, g = (t.requires_grad_() for t in (w, scales, g))
    fused_mix_fake_quantize(w, scales, g, bits).backward(grad_out)  # the first step
    with HostToDevice(monkeypatch) as mode:
        fused_mix_fake_quantize(w, scales, g, bits).backward(grad_out)
    assert mode.ops == []
    assert w.grad is not None and scales.grad.shape == scales.shape and g.grad.shape == g.shape


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler: the C kernel cannot be built here")
def test_the_cpu_default_runs_the_c_kernel(monkeypatch):
    monkeypatch.setenv("ESPNET_MPQ_NATIVE", "1")
    calls = []
    for name in ("forward", "backward"):
        original = getattr(native, name)
        monkeypatch.setattr(native, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    bits = (2, 4, 8)
    values_and_grads(lambda *a: fused_mix_fake_quantize(*a, bits), *inputs(SHAPES["linear"], bits))
    assert calls == ["forward", "backward"]


def test_a_kernel_that_cannot_be_built_falls_back_to_the_loop_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(native, "_state", {})  # forget this process's kernel
    monkeypatch.setenv("ESPNET_MPQ_NATIVE", "1")
    monkeypatch.setenv("ESPNET_MPQ_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", shutil.which("false"))  # a "compiler" that fails
    bits = (2, 4, 8)
    ref = values_and_grads(lambda *a: mix_fake_quantize(*a, bits), *inputs(SHAPES["linear"], bits))
    with caplog.at_level(logging.WARNING):
        got = values_and_grads(lambda *a: fused_mix_fake_quantize(*a, bits, dead_threshold=0.0),
                               *inputs(SHAPES["linear"], bits))
    assert "building native_mixture.c failed, the quantizer uses its eager CPU loop" in caplog.text
    assert list(tmp_path.iterdir()) == []  # no half-built library left behind
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler: the C kernel cannot be built here")
@pytest.mark.parametrize("threads", [1, 2])
def test_the_c_kernel_gives_the_same_results_on_any_number_of_threads(threads, monkeypatch):
    monkeypatch.setenv("ESPNET_MPQ_NATIVE", "1")
    bits = (1, 2, 3, 4, 8)
    w, scales, g, grad_out = inputs((37, 19), bits)  # rows not a multiple of the threads, columns not of the vector
    ref = values_and_grads(lambda *a: mix_fake_quantize(*a, bits), w, scales, g, grad_out)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = values_and_grads(lambda *a: fused_mix_fake_quantize(*a, bits, dead_threshold=0.0), w, scales, g, grad_out)
    finally:
        torch.set_num_threads(previous)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("value", ["false", "no", ""])
def test_a_switch_other_than_0_or_1_is_refused_by_name(value, monkeypatch):
    monkeypatch.setenv("ESPNET_MPQ_NATIVE", value)
    with pytest.raises(ValueError, match=f"ESPNET_MPQ_NATIVE='{value}': must be 0 .* or 1"):
        fused_mix_fake_quantize(*inputs(SHAPES["linear"], (2, 4))[:3], (2, 4))


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler: the C kernel cannot be built here")
def test_an_empty_cache_variable_builds_in_the_default_place_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("ESPNET_MPQ_NATIVE", "1")
    monkeypatch.setenv("ESPNET_MPQ_CACHE", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert native.kernels() is not None
    assert [p.name for p in tmp_path.iterdir()] == ["home"]
    assert list((tmp_path / "home" / ".cache" / "espnet_mpq").glob("native_mixture-*.so"))


def test_the_broadcast_runs_the_triton_kernel_when_it_is_on_and_not_otherwise(monkeypatch):
    use_triton_interpreter(monkeypatch)
    calls = []
    original = triton_kernel.mix_fake_quantize
    monkeypatch.setattr(triton_kernel, "mix_fake_quantize", lambda *a: calls.append(a[3]) or original(*a))
    bits = (1, 2, 4, 8)
    values_and_grads(lambda *a: fused_mix_fake_quantize(*a, bits, broadcast=True), *inputs(SHAPES["conv1d"], bits))
    fused_mix_fake_quantize(*inputs(SHAPES["linear"], bits)[:3], bits, broadcast=False)  # the loop: not the kernel
    fused_mix_fake_quantize(*inputs(SHAPES["linear"], bits)[:3], bits, broadcast=True, compile=True)  # compiled: not
    monkeypatch.setenv("ESPNET_MPQ_TRITON", "0")
    fused_mix_fake_quantize(*inputs(SHAPES["linear"], bits)[:3], bits, broadcast=True)
    assert calls == [bits]


@pytest.mark.parametrize("value", ["true", "2", ""])
def test_a_triton_switch_other_than_0_or_1_is_refused_by_name(value, monkeypatch):
    monkeypatch.setenv("ESPNET_MPQ_TRITON", value)
    with pytest.raises(ValueError, match=f"ESPNET_MPQ_TRITON='{value}': must be 0 .* or 1"):
        fused_mix_fake_quantize(*inputs(SHAPES["linear"], (2, 4))[:3], (2, 4), broadcast=True)


def test_without_triton_the_broadcast_runs_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(triton_kernel, "_state", {})  # forget this process's kernel
    monkeypatch.delitem(sys.modules, "espnet_mpq.core.triton_mixture", raising=False)
    monkeypatch.setitem(sys.modules, "triton", None)  # import triton raises ImportError
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("ESPNET_MPQ_TRITON", "1")
    bits = (2, 4, 8)
    ref = values_and_grads(lambda *a: mix_fake_quantize(*a, bits), *inputs(SHAPES["linear"], bits))
    with caplog.at_level(logging.WARNING):
        got = values_and_grads(lambda *a: fused_mix_fake_quantize(*a, bits, dead_threshold=0.0, broadcast=True),
                               *inputs(SHAPES["linear"], bits))
    assert "cannot load the Triton kernel" in caplog.text and "uses its broadcast" in caplog.text
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-6, msg=name)


def test_the_triton_kernels_compile_for_cuda_gpus_ahead_of_time():
    """Triton's compiler, not its interpreter, for sm_80 and sm_90 (no GPU needed): the interpreter runs
    kernels that the compiler rejects (a first version reused a variable name across a loop)."""
    if not HAS_TRITON or importlib.util.find_spec("triton.backends.nvidia") is None:
        pytest.skip("triton with its NVIDIA backend is not installed")
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(root / "bench" / "triton_compile.py"), "--arch", "80", "90",
                           "--candidates", "1", "3", "5"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "0 kernel(s) failed to compile" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("columns", [1, 16, 1000, 4097])
def test_the_triton_kernel_covers_rows_of_any_length(columns, monkeypatch):
    """Rows shorter than one chunk, exactly one, and several chunks with a remainder."""
    use_triton_interpreter(monkeypatch)
    bits = (1, 3, 8)
    w, scales, g, grad_out = inputs((3, columns), bits)
    ref = values_and_grads(lambda *a: mix_fake_quantize(*a, bits), w, scales, g, grad_out)
    got = values_and_grads(lambda *a: fused_mix_fake_quantize(*a, bits, broadcast=True), w, scales, g, grad_out)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler: the C kernel cannot be built here")
def test_a_cached_kernel_that_does_not_load_is_built_again(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("ESPNET_MPQ_NATIVE", "1")
    monkeypatch.setenv("ESPNET_MPQ_CACHE", str(tmp_path))
    cached = native._build(shutil.which(os.environ.get("CC", "cc")))  # built, not loaded (the loader keys on the path)
    cached.write_bytes(b"not a shared library")
    with caplog.at_level(logging.WARNING):
        assert native.kernels() is not None
    assert "does not load" in caplog.text and "building it again" in caplog.text
    assert cached.read_bytes()[:4] == b"\x7fELF"
    bits = (2, 4, 8)
    ref = values_and_grads(lambda *a: mix_fake_quantize(*a, bits), *inputs(SHAPES["linear"], bits))
    got = values_and_grads(lambda *a: fused_mix_fake_quantize(*a, bits, dead_threshold=0.0), *inputs(SHAPES["linear"], bits))
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-6, msg=name)
