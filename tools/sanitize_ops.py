"""Every CUDA kernel once or twice, forward and backward, at ViT shapes and odd ones, for
compute-sanitizer (memcheck: out-of-bounds and misaligned accesses; racecheck: shared-memory races):

    compute-sanitizer --tool memcheck --error-exitcode 9 python tools/sanitize_ops.py
    compute-sanitizer --tool racecheck --error-exitcode 9 python tools/sanitize_ops.py

Small batches keep the instrumented run to seconds; the correctness of the values is the tests' job,
this only has to reach every code path (tails of rows, columns and blocks, every head dim)."""
import sys

import torch

import vitfast
from vitfast.ops import (attention, block_quantize, fixed_point_quantize, float_quantize, fp8_linear, layer_norm,
                         layer_norm_fp8, linear_gelu, linear_residual, lp_matmul, scaled_cast)


def grads(out, *leaves):
    return torch.autograd.grad(out.float().square().sum(), [t for t in leaves if t is not None])


def quantizers():
    x = torch.randn(1000003, device="cuda")
    for rounding in ("nearest", "stochastic"):
        float_quantize(x, 4, 3, rounding, saturate=True, finite=True)
        float_quantize(x.half(), 5, 2, rounding)  # 16-byte vectors of 8, then a tail of 3
        float_quantize(x.bfloat16()[4:], 8, 7, rounding)  # 8-byte aligned only: element by element
        fixed_point_quantize(x, 8, 4, rounding=rounding)
        block_quantize(x[:999999].view(333, 3003), 8, dim=0, rounding=rounding)
        block_quantize(x, 8, rounding=rounding)
    for dtype in (torch.float8_e4m3fn, torch.float8_e5m2, torch.int8):  # per tensor, per row, unaligned tail
        scaled_cast(x, x.abs().amax() / 448, dtype)
        scaled_cast(x[1:].half(), torch.tensor(0.01, device="cuda"), dtype)
        scaled_cast(x[:999999].view(333, 3003), torch.rand(333, device="cuda") + 0.01, dtype)
        scaled_cast(x[:999999].bfloat16().view(333, 3003), torch.rand(333, device="cuda") + 0.01, dtype)


def attentions():
    for dtype in (torch.float16, torch.bfloat16):
        # On an H100/H200 the forwards with no logits run the sm90 kernels: up to N = 256 each key tile
        # (64, 128, 192, 256), a full and a partial 8-key tail, with and without a bias; beyond, the
        # key-tiled kernel (N = 257 at d = 96: two tiles; 577: 3 to 5 tiles, an idle second half). The
        # backwards run the sm90 one: one CTA per head where sm90_bwd_fits holds, else key groups with
        # dQ added by TMA reduce-add (N = 257, 577, d = 128 at 130, d = 80 at 256); every key tile, one
        # and two key blocks per warpgroup, every bias gradient (q's dtype per (b, h); a bias broadcast
        # over the batch by 16-byte reductions into batch slots; (B, 1, N, N) fp32 per (b, h), summed
        # over the heads). fp16 accumulation: the key-tiled forward with wgmma's fp16
        # accumulators at every N, the mma.sync backward.
        for N, d in ((1, 64), (50, 64), (197, 64), (77, 80), (65, 32), (257, 96), (130, 128), (129, 64), (256, 80),
                     (256, 64), (100, 128), (200, 32), (577, 64), (577, 128)):
            qkv = torch.randn(2, N, 3, 3, d, device="cuda", dtype=dtype)
            q, k, v = (t.requires_grad_() for t in qkv.permute(2, 0, 3, 1, 4).detach().clone().unbind(0))
            bias = torch.randn(1, 3, N, N, device="cuda", dtype=dtype, requires_grad=True)
            full_bias = torch.randn(2, 3, N, N, device="cuda", dtype=dtype, requires_grad=True)
            batch_bias = torch.randn(2, 1, N, N, device="cuda", dtype=dtype, requires_grad=True)
            grads(attention(q, k, v), q, k, v)
            grads(attention(q, k, v, bias), q, k, v, bias)
            grads(attention(q, k, v, full_bias), q, k, v, full_bias)
            grads(attention(q, k, v, batch_bias), q, k, v, batch_bias)
            grads(attention(q, k, v, out_layout="bnhd"), q, k, v)  # written through (B, N, H, d) strides
            out, logits = attention(q, k, v, bias, return_logits=True)
            grads(out.float().sum() + logits.float().sum(), q, k, v, bias)
            if dtype == torch.float16:
                grads(attention(q, k, v, accumulate="fp16"), q, k, v)
                grads(attention(q, k, v, bias, accumulate="fp16"), q, k, v, bias)


def norms():
    for D in (192, 768, 1280, 104):
        for dtype in (torch.bfloat16, torch.float32):
            x = torch.randn(197 * 3, D, device="cuda", dtype=dtype, requires_grad=True)
            r = torch.randn_like(x, requires_grad=True)
            w = (torch.rand(D, device="cuda") + 0.5).requires_grad_()
            b = torch.randn(D, device="cuda", requires_grad=True)
            grads(layer_norm(x, w, b, 1e-6), x, w, b)
            s, y = layer_norm(x, w, b, 1e-6, residual=r)
            grads(s.float().sum() + y.float().sum(), x, r, w, b)
    # LayerNorm into e4m3 codes: every fixed width in both 16-bit dtypes, and the composite's cases
    for D in (192, 256, 384, 512, 768, 1024, 1280, 104):
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            x = torch.randn(197 * 3 + 1, D, device="cuda", dtype=dtype)
            layer_norm_fp8(x, torch.rand(D, device="cuda") + 0.5, torch.randn(D, device="cuda"),
                           torch.tensor([0.125], device="cuda"))
    # more rows than the persistent fixed-width kernels take in one round (H100): their row loops and prefetch
    for D, rows in ((192, 20011), (768, 8003)):
        x = torch.randn(rows, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        r = torch.randn_like(x, requires_grad=True)
        w = (torch.rand(D, device="cuda") + 0.5).requires_grad_()
        b = torch.randn(D, device="cuda", requires_grad=True)
        s, y = layer_norm(x, w, b, 1e-6, residual=r)
        grads(s.float().sum() + y.float().sum(), x, r, w, b)


def products():
    for (M, K, N) in ((197 * 2, 192, 768), (131, 768, 200), (7, 24, 9)):
        for dtype in (torch.bfloat16, torch.float16):
            x = torch.randn(M, K, device="cuda", dtype=dtype, requires_grad=True)
            w = (torch.randn(N, K, device="cuda", dtype=dtype) / K**0.5).requires_grad_()
            b = torch.randn(N, device="cuda", dtype=dtype, requires_grad=True)
            r = torch.randn(M, N, device="cuda", dtype=dtype, requires_grad=True)
            grads(linear_gelu(x, w, b), x, w, b)
            grads(linear_residual(x, w, b, r), x, w, b, r)
            if M > 100:  # every Hopper configuration (the others take "auto" alone), forward only
                with torch.no_grad():
                    for kind, run in (("act", lambda c: linear_gelu(x, w, b, config=c)),
                                      ("residual", lambda c: linear_residual(x, w, b, r, config=c)),
                                      ("residual_f32", lambda c: linear_residual(x, w, b, r.float(), config=c))):
                        for c in torch.ops.vitfast.sm90_configs(kind):
                            run(c)
                for c in torch.ops.vitfast.sm90_configs("act_aux"):
                    linear_gelu(x, w, b, config=c)
        a = torch.randn(M, K, device="cuda").half()
        bm = torch.randn(K, N, device="cuda").half() / K**0.5
        for acc in ("fp16", "fp32"):
            lp_matmul(a, bm, accumulate=acc)
            lp_matmul(a, bm, torch.randn(N, device="cuda").half(), epilogue="gelu", accumulate=acc)
            lp_matmul(a, bm, torch.randn(N, device="cuda").half(), epilogue="residual", accumulate=acc,
                      residual=torch.randn(M, N, device="cuda").half())


def fp8_products():
    """fp8_linear's kernels: every configuration and output, the amax, ragged M, N and K tails."""
    e4m3, one = torch.float8_e4m3fn, torch.ones(1, device="cuda")
    for (M, K, N) in ((197 * 2, 192, 768), (131, 784, 208), (7, 16, 16)):
        x8 = scaled_cast(torch.randn(M, K, device="cuda"), one, e4m3)
        w8 = scaled_cast(torch.randn(N, K, device="cuda"), one, e4m3)
        sb, b = torch.rand(N, device="cuda") / 64, torch.randn(N, device="cuda")
        r = torch.randn(M, N, device="cuda", dtype=torch.bfloat16)
        for c in torch.ops.vitfast.sm90_configs("fp8_act"):
            fp8_linear(x8, w8, one, sb, b, amax=True, config=c)
            fp8_linear(x8, w8, one, sb, None, activation="gelu", out_dtype=e4m3, out_scale=one / 4, amax=True, config=c)
            fp8_linear(x8, w8, one, sb, b, residual=r, amax=True, config=c)
            fp8_linear(x8, w8, one, sb, b, residual=r, config=c)


def fp8_chain():
    """convert_fp8's chain end to end: layer_norm_fp8, the four products, the cast after attention."""
    from vitfast.quant import convert_fp8

    torch.manual_seed(0)
    model = vitfast.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=2,
                                 num_classes=16).cuda().eval()
    x = torch.randn(3, 3, 32, 32, device="cuda")
    with torch.no_grad():
        convert_fp8(model, [x])(x)


def main():
    if not (torch.cuda.is_available() and vitfast.has_cuda_kernels()):
        sys.exit("sanitize_ops.py needs a GPU and vitfast's CUDA kernels")
    for part in (quantizers, attentions, norms, products, fp8_products, fp8_chain):
        part()
        torch.cuda.synchronize()
        print(f"{part.__name__}: ran", flush=True)


if __name__ == "__main__":
    main()
