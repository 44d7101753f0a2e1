# Eager PyTorch reference for the knowledge-distillation training step, written as a user would write it with
# plain torch (no torchtune import): teacher forward under no_grad, student forward + backward, (1 - r) * CE +
# r * forward KL (torchtune's ForwardKLWithChunkedOutputLoss value convention, 8 output chunks, kd_ratio 0.5, see
# torchtune/recipes/knowledge_distillation_single_device.py and torchtune/modules/loss/kd_losses.py), AdamW.
# Architecture: Llama (RMSNorm in fp32, rotate-half RoPE, GQA, SwiGLU), as Hugging Face's modeling_llama.py.
# Debian's python3-torch (1.13) has no scaled_dot_product_attention, so attention is the explicit softmax(QK^T)V.
#
# Run with Debian's interpreter, OpenBLAS and passive OpenMP waiting, e.g.
#   OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/reference/kd_step.py --steps 5 --warmup 1
# Prints one JSON line: {"impl": "pytorch", "tokens_per_s": [...], "median_tokens_per_s": ..., "gemm_gflops": ...,
# "blas": [...], ...}. gemm_gflops is this process's own 1024^3 fp32 matmul rate (median of 9, after one warm-up, as
# SharpTune's probe), taken before and after the steps: a reference whose BLAS is slow or starved shows it here, and the
# bench refuses to print a ratio against it. blas lists the BLAS/OpenMP libraries this process has mapped.
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        return self.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)


def rope_tables(seq, head_dim, base=10000.0):
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(seq, dtype=torch.float32), inv)  # [s, h_d/2]
    emb = torch.cat([freqs, freqs], dim=-1)  # [s, h_d]
    return emb.cos()[None, None], emb.sin()[None, None]  # [1, 1, s, h_d]


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class Attention(nn.Module):
    def __init__(self, dim, n_heads, n_kv):
        super().__init__()
        self.n_heads, self.n_kv, self.hd = n_heads, n_kv, dim // n_heads
        self.q_proj = nn.Linear(dim, n_heads * self.hd, bias=False)
        self.k_proj = nn.Linear(dim, n_kv * self.hd, bias=False)
        self.v_proj = nn.Linear(dim, n_kv * self.hd, bias=False)
        self.o_proj = nn.Linear(n_heads * self.hd, dim, bias=False)

    def forward(self, x, cos, sin, causal):
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.n_heads, self.hd).transpose(1, 2)  # [b, n_h, s, h_d]
        k = self.k_proj(x).view(b, s, self.n_kv, self.hd).transpose(1, 2)  # [b, n_kv, s, h_d]
        v = self.v_proj(x).view(b, s, self.n_kv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.n_heads // self.n_kv
        k = k.repeat_interleave(rep, dim=1)  # [b, n_h, s, h_d]
        v = v.repeat_interleave(rep, dim=1)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.hd)  # [b, n_h, s, s]
        scores = scores.masked_fill(causal, float("-inf"))
        out = F.softmax(scores, dim=-1) @ v  # [b, n_h, s, h_d]
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1))


class Layer(nn.Module):
    def __init__(self, dim, n_heads, n_kv, hidden):
        super().__init__()
        self.input_layernorm = RMSNorm(dim)
        self.self_attn = Attention(dim, n_heads, n_kv)
        self.post_attention_layernorm = RMSNorm(dim)
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x, cos, sin, causal):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, causal)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
    def __init__(self, vocab, dim, layers, n_heads, n_kv, hidden, seq, tie):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList([Layer(dim, n_heads, n_kv, hidden) for _ in range(layers)])
        self.norm = RMSNorm(dim)
        self.lm_head = None if tie else nn.Linear(dim, vocab, bias=False)
        cos, sin = rope_tables(seq, dim // n_heads)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.register_buffer("causal", torch.ones(seq, seq, dtype=torch.bool).triu(1), persistent=False)

    def forward(self, tokens, chunks):
        s = tokens.shape[1]
        h = self.embed_tokens(tokens)
        cos, sin, causal = self.cos[:, :, :s], self.sin[:, :, :s], self.causal[:s, :s]
        for layer in self.layers:
            h = layer(h, cos, sin, causal)
        h = self.norm(h)
        w = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return [F.linear(c, w) for c in h.chunk(chunks, dim=1)]  # n x [b, s_i, v]


def ce_chunked(logits, labels, ignore=-100):
    lab = [c.reshape(-1) for c in labels.chunk(len(logits), dim=1)]
    total = sum(F.cross_entropy(l.reshape(-1, l.shape[-1]).float(), y, ignore_index=ignore, reduction="sum")
                for l, y in zip(logits, lab))
    return total / (labels != ignore).sum()


def forward_kl_chunked(student, teacher, labels, ignore=-100):
    # torchtune ForwardKLWithChunkedOutputLoss: -sum(p_T * log p_S) over valid tokens / valid tokens
    lab = [c.reshape(-1) for c in labels.chunk(len(student), dim=1)]
    total = 0.0
    for s, t, y in zip(student, teacher, lab):
        s = s.reshape(-1, s.shape[-1]).float()
        t = t.reshape(-1, t.shape[-1]).float()
        p_t = F.softmax(t, dim=-1)
        logp_s = F.log_softmax(s, dim=-1)
        prod = torch.masked_fill(p_t * logp_s, torch.isinf(s), 0)
        x = prod.sum(-1)
        total = total + (x * (y != ignore)).sum()
    return -total / (labels != ignore).sum()


def gemm_gflops(n=1024, reps=9):
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - t0)
    return 2.0 * n ** 3 / statistics.median(times) / 1e9


def loaded_blas():
    names = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            base = path.rsplit("/", 1)[-1]
            if any(k in base for k in ("blas", "lapack", "mkl", "gomp", "omp", "dnnl")):
                names.add(path)
    return sorted(names)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--teacher", default="768,12,12,4,2048")  # dim, layers, heads, kv heads, ffn hidden
    ap.add_argument("--student", default="384,6,6,2,1024")
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--kd-ratio", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t = [int(x) for x in a.teacher.split(",")]
    s = [int(x) for x in a.student.split(",")]
    # teacher untied like Llama 3.1 8B, student tied like Llama 3.2 1B
    teacher = Llama(a.vocab, t[0], t[1], t[2], t[3], t[4], a.seq, tie=False).eval()
    student = Llama(a.vocab, s[0], s[1], s[2], s[3], s[4], a.seq, tie=True).train()
    for p in teacher.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(student.parameters(), lr=3e-4, weight_decay=0.01)
    gemm_before = gemm_gflops()
    times, losses = [], []
    for step in range(a.warmup + a.steps):
        tokens = torch.randint(0, a.vocab, (a.batch, a.seq))
        labels = torch.cat([tokens[:, 1:], torch.full((a.batch, 1), -100)], dim=1)
        t0 = time.perf_counter()
        with torch.no_grad():
            t_logits = teacher(tokens, a.chunks)
        s_logits = student(tokens, a.chunks)
        ce = ce_chunked(s_logits, labels)
        kd = forward_kl_chunked(s_logits, t_logits, labels)
        loss = (1 - a.kd_ratio) * ce + a.kd_ratio * kd
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        dt = time.perf_counter() - t0
        if step >= a.warmup:
            times.append(dt)
    tps = [a.batch * a.seq / x for x in times]
    gemm = statistics.median([gemm_before, gemm_gflops()])
    print(json.dumps({"impl": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "gemm_gflops": gemm, "blas": loaded_blas(),
                      "tokens_per_s": tps, "median_tokens_per_s": statistics.median(tps),
                      "first_loss": losses[0], "last_loss": losses[-1]}))


if __name__ == "__main__":
    main()
